"""Export sources and chains: what SOURCE is, and the exporters --to runs from it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel
from torch import nn

from visionforge import lineage
from visionforge.errors import ConfigError, StorageError
from visionforge.export.chain import (
    chain_outputs,
    checkpoint_in_lineage,
    load_artifact,
    plan_chain,
    run_chain,
    source_kind,
)
from visionforge.interfaces import Artifact
from visionforge.registry import REGISTRIES


class PackedConfig(BaseModel):
    """Config of a test exporter that takes ONNX artifacts."""

    model_config = {"extra": "forbid"}


class Packer:
    """A downstream exporter: copies the ONNX bytes into a ``.pack`` file with a manifest."""

    suffix = ".pack"
    source_kinds: tuple[str, ...] = ("onnx",)

    def export(
        self,
        source: Any,
        *,
        out: str,
        recipe: Any = None,
        parents: Sequence[str] = (),
        example: torch.Tensor | None = None,
    ) -> Artifact:
        assert isinstance(source, Artifact) and source.kind == "onnx" and example is None
        Path(out).write_bytes(Path(source.path).read_bytes())
        manifest = lineage.write_manifest(out, "pack", parents=parents, recipe=recipe)
        return Artifact(path=out, kind="pack", manifest=manifest)


@pytest.fixture
def packer() -> Iterator[None]:
    REGISTRIES.exporters.register(
        "test_pack", config=PackedConfig, builder=lambda cfg: Packer(), namespace="tests"
    )
    try:
        yield
    finally:
        REGISTRIES.exporters.unregister("tests:test_pack")


def _checkpoint(folder: Path) -> str:
    path = folder / "best.ckpt"
    path.write_bytes(b"weights")
    lineage.write_manifest(str(path), "checkpoint")
    return str(path)


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind("recipe.yaml") == source_kind("r.JSON") == "recipe"
    assert source_kind(_checkpoint(tmp_path)) == "checkpoint"
    assert source_kind(str(tmp_path / "missing.ckpt")) == "checkpoint"  # its loader says so
    bare = tmp_path / "given.onnx"
    bare.write_bytes(b"onnx")
    assert source_kind(str(bare)) == "onnx"
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"weights\.bin: not a recipe .* a checkpoint"):
        source_kind(str(odd))
    lineage.write_manifest(str(odd), "checkpoint")
    assert source_kind(str(odd)) == "checkpoint"  # the manifest is the truth
    with pytest.raises(StorageError, match="no such file"):
        source_kind(str(tmp_path / "nothing.bin"))


def test_checkpoint_found_through_lineage_and_identity_checked(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    onnx_file = tmp_path / "best.onnx"
    onnx_file.write_bytes(b"onnx")
    manifest = lineage.write_manifest(str(onnx_file), "onnx", parents=[ckpt])
    loaded = load_artifact(str(onnx_file))
    assert loaded.kind == "onnx" and loaded.manifest["id"] == manifest["id"]
    assert checkpoint_in_lineage(loaded) == ckpt
    Path(ckpt).write_bytes(b"other weights")  # the file changed under its manifest
    with pytest.raises(StorageError, match=r"not the recorded parent: .*best\.ckpt changed"):
        checkpoint_in_lineage(loaded)
    Path(ckpt).write_bytes(b"weights")
    assert checkpoint_in_lineage(loaded) == ckpt
    lineage.write_manifest(ckpt, "checkpoint")  # another checkpoint now lives there
    with pytest.raises(StorageError, match="not the recorded parent"):
        checkpoint_in_lineage(loaded)
    assert checkpoint_in_lineage(Artifact(path="x.onnx", kind="onnx")) is None


def test_plan_chain_exports_onnx_first(packer: None) -> None:
    steps = plan_chain("test_pack", "model", lambda name: {"type": name})
    assert [s.name for s in steps] == ["onnx", "test_pack"]
    assert [s.name for s in plan_chain("test_pack", "onnx", lambda n: {"type": n})] == ["test_pack"]
    with pytest.raises(ConfigError, match="the onnx exporter takes model"):
        plan_chain("onnx", "pack", lambda name: {"type": name})
    assert chain_outputs("/x/best.pack", steps) == ["/x/best.onnx", "/x/best.pack"]


@pytest.mark.slow
def test_run_chain_links_lineage(tmp_path: Path, packer: None) -> None:
    ckpt = _checkpoint(tmp_path)
    steps = plan_chain("test_pack", "model", lambda name: {"type": name})
    outs = chain_outputs(str(tmp_path / "best.pack"), steps)
    onnx_art, pack = run_chain(
        steps, nn.Linear(4, 2), outs=outs, recipe=None, parents=[ckpt], example=torch.ones(1, 4)
    )
    chain = lineage.lineage_chain(pack.path)
    assert [c["kind"] for c in chain] == ["pack", "onnx", "checkpoint"]
    ref = chain[0]["parents"][0]
    assert (ref["path"], ref["id"]) == (onnx_art.path, onnx_art.manifest["id"])
    ref = json.loads(Path(onnx_art.path + ".manifest.json").read_text())["parents"][0]
    assert (ref["path"], ref["id"]) == (ckpt, lineage.read_manifest(ckpt)["id"])
