"""Loader backends of ``imagenet_folder``: the same crops and flips on torch, DALI and device
decoding, exact resume, and the fallback when DALI or CUDA is missing."""

from __future__ import annotations

import importlib
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.io import decode_image, encode_jpeg, encode_png

import visionforge
from visionforge.config import LoaderConfig
from visionforge.engine.data import ResumableSampler, SeededDataset, make_loader
from visionforge.errors import ConfigError
from visionforge.interfaces import BatchLoader
from visionforge_resnet.configs import ImageNetFolderConfig
from visionforge_resnet.datasets import reference_transforms
from visionforge_resnet.device_decode import DevicePlannedItems, decode_batch
from visionforge_resnet.plans import centre_box, draw_plan, image_size
from visionforge_resnet.reduced_decode import ReducedDecodeTrain

SIZES = [(375, 500), (500, 375), (1200, 1600), (97, 61), (333, 333), (420, 560)]
BATCH = 4


def photo(height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth colours with a dark left third, so a wrong flip is far off."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((1, 3, 5, 7), generator=g)
    image = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")[0]
    image[:, :, : width // 3] *= 0.2
    return (image * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 JPEGs of ImageNet-like sizes in 2 classes, one of them a PNG."""
    root = tmp_path_factory.mktemp("backends") / "train"
    for i in range(12):
        label = i % 2
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        image = photo(*SIZES[i % len(SIZES)], seed=i)
        if i == 7:
            (root / f"c{label}" / f"{i}.png").write_bytes(encode_png(image).numpy().tobytes())
        else:
            data = encode_jpeg(image, quality=95).numpy().tobytes()
            (root / f"c{label}" / f"{i}.JPEG").write_bytes(data)
    return root


def dataset(root: Path, augment: str = "train", **fields: Any) -> Any:
    spec = {"type": "imagenet_folder", "root": str(root), "image_size": 64, "normalize": False}
    return visionforge.datasets.build({**spec, "augment": augment, **fields})


def batches(
    data: Any, backend: str, *, epoch: int = 0, start: int = 0, workers: int = 0, seed: int = 3
) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    sampler = ResumableSampler(len(data), BATCH, seed=seed)
    sampler.set_position(epoch, start)
    cfg = LoaderConfig(num_workers=workers, backend=backend)
    loader = make_loader(SeededDataset(data, seed), sampler, BATCH, cfg, seed, False)
    return loader, list(loader)


def mean_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


# ----------------------------------------------------------------------------- plans


@settings(max_examples=80, deadline=None)
@given(height=st.integers(1, 3000), width=st.integers(1, 3000), seed=st.integers(0, 2**31))
def test_plans_are_the_draws_of_the_torch_decoders(height: int, width: int, seed: int) -> None:
    cfg = ImageNetFolderConfig(root="/x", image_size=224, augment="train")
    torch.manual_seed(seed)
    plan = draw_plan(cfg, height, width)
    torch.manual_seed(seed)
    box, _, flip = ReducedDecodeTrain(224).plan(height, width)
    assert (plan.box, plan.flip) == (box, flip)
    assert box.top >= 0 and box.top + box.height <= height
    assert box.left >= 0 and box.left + box.width <= width


@settings(max_examples=100, deadline=None)
@given(height=st.integers(1, 4000), width=st.integers(1, 4000), size=st.integers(8, 400))
def test_eval_box_is_the_centred_part_resize_and_crop_keep(
    height: int, width: int, size: int
) -> None:
    resize = max(size, round(size / 0.875))
    box = centre_box(height, width, size, resize)
    assert box.height == box.width >= 1
    assert box.top >= 0 and box.top + box.height <= height
    assert box.left >= 0 and box.left + box.width <= width
    assert abs(box.height - min(height, width) * size / resize) <= 1 or box.height == 1
    assert abs(2 * box.top + box.height - height) <= 1  # centred
    assert abs(2 * box.left + box.width - width) <= 1


def test_scales_and_ratios_follow_the_configured_distribution() -> None:
    """Area uniform on ``scale``, aspect ratio log-uniform on ``ratio`` (ranges where no box
    falls outside the image, so torchvision's rejection of such boxes does not bend them)."""
    cfg = ImageNetFolderConfig(
        root="/x", image_size=224, augment="train", scale=(0.08, 0.25), ratio=(0.5, 2.0)
    )
    torch.manual_seed(0)
    plans = [draw_plan(cfg, 1000, 1000) for _ in range(3000)]
    areas = [p.box.height * p.box.width / 1e6 for p in plans]
    log_ratios = [math.log(p.box.width / p.box.height) for p in plans]
    assert min(areas) >= 0.08 - 0.005 and max(areas) <= 0.25 + 0.005
    assert statistics.mean(areas) == pytest.approx(0.165, abs=0.005)
    assert min(log_ratios) >= math.log(0.5) - 0.02 and max(log_ratios) <= math.log(2) + 0.02
    assert statistics.mean(log_ratios) == pytest.approx(0.0, abs=0.03)  # log-uniform
    assert statistics.mean(p.flip for p in plans) == pytest.approx(0.5, abs=0.03)


def test_image_size_reads_headers_of_jpeg_and_other_files(folder: Path) -> None:
    for path in sorted(folder.rglob("*.*")):
        data = path.read_bytes()
        expected = tuple(decode_image(path.as_posix()).shape[-2:])
        assert image_size(data) == expected, path


# ----------------------------------------------------------------------------- DALI


def test_dali_crops_and_flips_like_the_torch_reference(folder: Path) -> None:
    pytest.importorskip("nvidia.dali")
    reduced = dataset(folder)
    full = dataset(folder, decoder="full")
    loader, dali = batches(reduced, "dali")
    _, reference = batches(full, "torch")
    assert isinstance(loader, BatchLoader) and loader.backend == "dali-cpu"
    assert len(loader) == len(dali) == 3
    sampler = ResumableSampler(len(reduced), BATCH, seed=3)
    sampler.set_position(0)
    keys = list(sampler)
    seeded = SeededDataset(reduced, 3)
    flips = 0
    for k, (ours, ref) in enumerate(zip(dali, reference, strict=True)):
        assert ours["image"].shape == (BATCH, 3, 64, 64) and ours["image"].dtype == torch.uint8
        assert torch.equal(ours["label"], ref["label"])
        for j in range(BATCH):
            error = mean_error(ours["image"][j], ref["image"][j])
            assert error < 6, (k, j, error)  # resampling filters differ, boxes do not
            mirrored = mean_error(ours["image"][j], ref["image"][j].flip(-1))
            flips += mirrored > error + 5
        # the torch reduced decoder agrees on the same items
        for j, key in enumerate(keys[k * BATCH : (k + 1) * BATCH]):
            assert mean_error(ours["image"][j], seeded[key]["image"]) < 6
    assert flips >= 3  # the mirror images tell flips apart, so the flips were checked


def test_dali_eval_is_resize_and_centre_crop(folder: Path) -> None:
    pytest.importorskip("nvidia.dali")
    _, dali = batches(dataset(folder, "eval"), "dali")
    _, reference = batches(dataset(folder, "eval", decoder="full"), "torch")
    for ours, ref in zip(dali, reference, strict=True):
        for j in range(ours["image"].shape[0]):
            assert mean_error(ours["image"][j], ref["image"][j]) < 6


def test_dali_resumes_exactly_at_a_step_and_ignores_threads(folder: Path) -> None:
    pytest.importorskip("nvidia.dali")
    data = dataset(folder)
    _, whole = batches(data, "dali", epoch=2, workers=1)
    _, resumed = batches(data, "dali", epoch=2, start=BATCH, workers=2)
    assert len(resumed) == len(whole) - 1
    for a, b in zip(whole[1:], resumed, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    _, other_epoch = batches(data, "dali", epoch=3)
    assert not torch.equal(other_epoch[0]["image"], whole[0]["image"])


def test_dali_stops_cleanly_when_iteration_is_abandoned(folder: Path) -> None:
    pytest.importorskip("nvidia.dali")
    data = dataset(folder)
    loader, whole = batches(data, "dali")
    iterator = iter(loader)
    next(iterator)
    del iterator  # threads shut down, nothing fed stays in the pipeline
    assert all(
        torch.equal(a["image"], b["image"]) for a, b in zip(whole, list(loader), strict=True)
    )


# ----------------------------------------------------------------------------- fallback


def without_dali(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def import_module(name: str, package: str | None = None) -> Any:
        if name.startswith("nvidia.dali"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", import_module)


def test_missing_dali_falls_back_with_one_line(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_dali(monkeypatch)
    data = dataset(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader, got = batches(data, "dali")
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "data.loader.backend: dali: NVIDIA DALI is not installed" in messages[0]
    assert "install it with: pip install nvidia-dali-cuda130" in messages[0]
    assert "using backend: torch" in messages[0] and "\n" not in messages[0]
    assert not isinstance(loader, BatchLoader)
    _, torch_batches = batches(data, "torch")
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(got, torch_batches, strict=True))


def test_strict_fallback_refuses(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without_dali(monkeypatch)
    data = dataset(folder)
    cfg = LoaderConfig(num_workers=0, backend="dali", backend_fallback="error")
    sampler = ResumableSampler(len(data), BATCH)
    with pytest.raises(ConfigError, match=r"DALI is not installed.*backend_fallback: error"):
        make_loader(SeededDataset(data, 0), sampler, BATCH, cfg, 0, False)


def test_dali_needs_a_dataset_that_offers_it(tmp_path: Path) -> None:
    synthetic = visionforge.datasets.build(
        {"type": "synthetic_classification", "num_samples": 8, "num_classes": 2}
    )
    cfg = LoaderConfig(num_workers=0, backend="dali")
    with pytest.raises(ConfigError, match="backend: 'dali' needs a dataset"):
        make_loader(SeededDataset(synthetic, 0), ResumableSampler(8, 4), 4, cfg, 0, False)


def test_nvjpeg_without_cuda_falls_back_to_reduced(folder: Path) -> None:
    nvjpeg, reduced = dataset(folder, decoder="nvjpeg"), dataset(folder)
    with pytest.warns(RuntimeWarning, match=r"decoder: nvjpeg: .*CUDA training device.*reduced"):
        loader, got = batches(nvjpeg, "torch")
    assert not isinstance(loader, BatchLoader)
    _, expected = batches(reduced, "torch")
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(got, expected, strict=True))


# ----------------------------------------------------------------------------- device decoding


@pytest.mark.parametrize("augment", ["train", "eval"])
def test_device_decoding_steps_match_the_full_decoder(folder: Path, augment: str) -> None:
    """Everything up to the device: workers' planned items, collate, then the batched
    ``decode_jpeg`` + crop/resize/flip run here on the CPU, equal the ``full`` decoder."""
    nvjpeg = dataset(folder, augment, decoder="nvjpeg")
    planned = SeededDataset(DevicePlannedItems(nvjpeg, nvjpeg.config), 3)
    full = SeededDataset(dataset(folder, augment, decoder="full"), 3)
    keys = [(1, i) for i in range(len(nvjpeg))]
    items = [planned[key] for key in keys]
    assert [item["jpeg"] for item in items].count(False) == 1  # the PNG, decoded by the worker
    batch = planned.dataset.collate_fn(items)
    out = decode_batch(batch, nvjpeg.config, torch.device("cpu"))
    assert out["image"].shape == (len(keys), 3, 64, 64) and out["image"].dtype == torch.uint8
    for j, key in enumerate(keys):
        assert torch.equal(out["image"][j], full[key]["image"]), j
        assert int(out["label"][j]) == full[key]["label"]


def test_reference_transforms_are_what_the_full_decoder_applies(folder: Path) -> None:
    full = dataset(folder, decoder="full")
    assert [type(t).__name__ for t in reference_transforms(full.config).transforms] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
    ]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvjpeg_on_the_gpu_matches_the_cpu_steps(folder: Path) -> None:
    data = dataset(folder, decoder="nvjpeg")
    sampler = ResumableSampler(len(data), BATCH, seed=3)
    sampler.set_position(0)
    cuda = torch.device("cuda")
    cfg = LoaderConfig(num_workers=0)
    loader = make_loader(SeededDataset(data, 3), sampler, BATCH, cfg, 3, False, cuda)
    assert isinstance(loader, BatchLoader) and loader.backend == "torch-nvjpeg"
    _, reference = batches(dataset(folder, decoder="full"), "torch")
    for ours, ref in zip(loader, reference, strict=True):
        assert ours["image"].device.type == "cuda"
        assert mean_error(ours["image"].cpu(), ref["image"]) < 3  # nvJPEG vs libjpeg IDCT


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dali_mixed_decoder_on_the_gpu(folder: Path) -> None:
    pytest.importorskip("nvidia.dali")
    data = dataset(folder)
    sampler = ResumableSampler(len(data), BATCH, seed=3)
    sampler.set_position(0)
    cuda = torch.device("cuda")
    cfg = LoaderConfig(num_workers=2, backend="dali")
    loader = make_loader(SeededDataset(data, 3), sampler, BATCH, cfg, 3, False, cuda)
    assert isinstance(loader, BatchLoader) and loader.backend == "dali-mixed"
    _, on_cpu = batches(data, "dali")
    for ours, ref in zip(loader, on_cpu, strict=True):
        assert ours["image"].device.type == "cuda"
        assert mean_error(ours["image"].cpu(), ref["image"]) < 3


def test_mixed_decoder_that_does_not_start_falls_back_to_dali_on_the_cpu(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nvidia.dali")
    from visionforge_resnet import dali_loader

    real = dali_loader.build_pipeline

    def build_pipeline(cfg: Any, batch_size: int, threads: int, device_id: int | None) -> Any:
        if device_id is not None:
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real(cfg, batch_size, threads, device_id)

    monkeypatch.setattr(dali_loader, "build_pipeline", build_pipeline)
    data = dataset(folder)
    cfg = LoaderConfig(num_workers=1, backend="dali")
    gpu = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match=r"mixed \(nvJPEG\) decoder does not start on cuda:0"):
        loader = make_loader(SeededDataset(data, 3), ResumableSampler(12, 4), 4, cfg, 3, False, gpu)
    assert isinstance(loader, BatchLoader) and loader.backend == "dali-cpu"
    strict = LoaderConfig(num_workers=1, backend="dali", backend_fallback="error")
    with pytest.raises(ConfigError, match="driver version is insufficient"):
        make_loader(SeededDataset(data, 3), ResumableSampler(12, 4), 4, strict, 3, False, gpu)
