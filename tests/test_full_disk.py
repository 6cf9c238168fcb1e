"""A full disk says so: on a size-limited tmpfs, a failed write names the file, says the
device is full, how much it needed and had, and leaves the previous file whole.

Mounting needs root (CI runs as root); elsewhere these tests skip, saying so."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from test_engine_support import single_thread, tiny_recipe  # noqa: F401 (autouse fixture)

from visionforge import lineage, storage
from visionforge.engine import Trainer, load_checkpoint
from visionforge.errors import StorageError

Mount = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Mount]:
    """``small_disk(bytes)`` mounts a tmpfs of that size and returns its folder."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs (needs root): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "--lazy", str(where)], check=True)  # torch may hold a file


def fill(folder: Path, leave: int) -> None:
    """Fill ``folder``'s file system until at most ``leave`` bytes are free."""
    free = storage.free_space(folder)
    assert free is not None
    (folder / "filler").write_bytes(b"\0" * max(0, free[0] - leave))


def big_recipe(output: Path, epochs: int) -> object:
    """A recipe whose checkpoint is about 1.2 MB (a 300-class head with SGD momentum)."""
    return tiny_recipe(
        output,
        model={"num_classes": 300, "width": 32},
        data={"train": {"num_classes": 300}, "val": None},
        evaluator=None,
        trainer={"epochs": epochs, "max_steps_per_epoch": 1},
    )


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(
    tmp_path: Path, small_disk: Mount
) -> None:
    probe = Trainer(big_recipe(tmp_path / "probe", epochs=1)).fit()  # type: ignore[arg-type]
    size = Path(probe.last_checkpoint).stat().st_size
    disk = small_disk(int(size * 1.6))  # room for one checkpoint, not for a second beside it
    run = disk / "run"
    with pytest.raises(StorageError) as caught:
        Trainer(big_recipe(run, epochs=2)).fit()  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{run / 'last.ckpt'}: no space left on device")
    # needs: the checkpoint's 1.26 MB (estimated from its tensors); had: the 1.6x disk
    # minus the first checkpoint and the small files beside it
    assert re.search(r"needs about 1\.[23] MB, the file system had [67]\d\d\.\d kB free", message)
    assert "\n" not in message
    kept = load_checkpoint(str(run / "last.ckpt"))  # the epoch-1 checkpoint, whole
    assert kept["position"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 1}
    assert not list(run.glob(".*.tmp"))
    failed = lineage.read_manifest(str(run))
    assert failed["status"] == "failed" and failed["error"].startswith("StorageError: ")
    assert failed["position"]["global_step"] == 2


def test_a_write_failing_midway_is_reported_as_disk_full(small_disk: Mount) -> None:
    """torch.save fails with its own RuntimeError when the device fills up; the size is not
    known in advance here, so nothing is checked before writing."""
    disk = small_disk(400_000)
    target = disk / "weights.ckpt"
    torch.save({"w": torch.zeros(10)}, target)
    before = target.read_bytes()
    with (
        pytest.raises(StorageError) as caught,
        storage.atomic_local_path(target) as tmp,
        open(tmp, "wb") as file,
    ):
        torch.save({"w": torch.zeros(250_000)}, file)  # 1 MB
    message = str(caught.value)
    assert message.startswith(f"{target}: no space left on device (")
    assert "the file system had 3" in message  # ~390 kB free before the write
    assert target.read_bytes() == before
    assert sorted(p.name for p in disk.iterdir()) == ["weights.ckpt"]


def test_manifest_and_copies_on_a_full_disk(tmp_path: Path, small_disk: Mount) -> None:
    disk = small_disk(200_000)
    artifact = disk / "model.onnx"
    artifact.write_bytes(b"graph")
    fill(disk, leave=100)
    with pytest.raises(StorageError, match=r"model\.onnx\.manifest\.json: no space left on device"):
        lineage.write_manifest(str(artifact), "onnx")
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 50_000)
    with pytest.raises(StorageError, match=r"about 50.0 kB, the file system had \d+ bytes free"):
        storage.put_file(source, disk / "data.bin")
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "model.onnx"]


def test_other_os_errors_name_the_file(small_disk: Mount) -> None:
    disk = small_disk(100_000)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(StorageError, match=r"x\.json: could not write it \(EROFS: Read-only"):
        storage.write_bytes_atomic(disk / "x.json", b"{}")


@pytest.mark.slow  # an ONNX export
def test_export_on_a_full_disk_names_the_output(small_disk: Mount) -> None:
    from visionforge.components.configs import OnnxExporterConfig
    from visionforge.export.onnx import build_onnx

    disk = small_disk(100_000)
    fill(disk, leave=0)
    out = disk / "model.onnx"
    with pytest.raises(StorageError, match=rf"^{re.escape(str(out))}: no space left on device"):
        build_onnx(OnnxExporterConfig()).export(
            torch.nn.Linear(64, 64), out=str(out), example=torch.randn(1, 64)
        )
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_dataset_conversion_into_a_full_disk_names_the_file(
    small_disk: Mount, tmp_path: Path
) -> None:
    """``coco convert`` (YOLO -> COCO, copied images) on a disk too small for the images:
    the error names the output file and the space; no output folder appears."""
    from visionforge_coco.convert import yolo_to_coco
    from visionforge_coco.synthetic import ShapesSpec, write_synthetic

    source = tmp_path / "yolo"
    write_synthetic(source, ShapesSpec(num_images=12, image_size=256), "yolo", progress=False)
    disk = small_disk(2 * 2**20)
    fill(disk, 60_000)
    out = disk / "coco"
    with pytest.raises(StorageError) as raised:
        yolo_to_coco(source, out, split="train", link="copy")
    message = str(raised.value)
    assert str(out) in message and "no space left on device" in message
    assert "needs about" in message and "had" in message, message
    assert not out.exists()
