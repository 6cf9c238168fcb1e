"""Lineage manifests and ``visionforge lineage``: dataset -> checkpoint -> ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import torch
from torch import nn

from visionforge import cli, lineage
from visionforge.components.configs import OnnxExporterConfig
from visionforge.export.onnx import build_onnx


def _artifact(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_manifest_fields(tmp_path: Path) -> None:
    data = _artifact(tmp_path / "data.json", b"[1, 2, 3]")
    manifest = lineage.write_manifest(data, "dataset", metrics={"images": 3}, cost={"usd": 0.5})
    assert lineage.read_manifest(data) == manifest
    assert manifest["kind"] == "dataset" and manifest["id"].startswith("dataset-")
    assert manifest["size"] == 9 and len(manifest["sha256"]) == 64
    assert manifest["parents"] == [] and manifest["cost"] == {"usd": 0.5}
    assert {"created", "recipe_sha256", "metrics", "path"} <= set(manifest)


def test_chain_dataset_checkpoint_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _artifact(tmp_path / "train.json", b"{}")
    data_id = lineage.write_manifest(data, "dataset")["id"]
    ckpt = _artifact(tmp_path / "best.ckpt", b"weights")
    ckpt_id = lineage.write_manifest(ckpt, "checkpoint", parents=[data], metrics={"top1": 0.5})[
        "id"
    ]
    onnx_path = str(tmp_path / "best.onnx")
    artifact = build_onnx(OnnxExporterConfig()).export(
        nn.Linear(4, 2), out=onnx_path, example=torch.randn(1, 4), parents=[ckpt]
    )
    ckpt_sha = lineage.read_manifest(ckpt)["sha256"]
    assert artifact.manifest["parents"] == [{"path": ckpt, "id": ckpt_id, "sha256": ckpt_sha}]

    assert cli.main(["lineage", onnx_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"onnx {artifact.manifest['id']} {onnx_path} sha256:")
    assert "max_abs_diff=" in lines[0]
    assert lines[1].startswith(f"<- checkpoint {ckpt_id} {ckpt}") and "top1=0.5" in lines[1]
    assert lines[2].startswith(f"  <- dataset {data_id} {data}")

    assert cli.main(["lineage", onnx_path, "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in chain] == [artifact.manifest["id"], ckpt_id, data_id]


def test_parent_without_manifest_ends_the_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _artifact(tmp_path / "foreign.ckpt", b"x")
    child = _artifact(tmp_path / "model.bin", b"y")
    lineage.write_manifest(child, "onnx", parents=[ckpt])
    assert cli.main(["lineage", child]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"<- {ckpt} (no manifest)"


def test_artifact_without_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bare = _artifact(tmp_path / "bare.onnx", b"z")
    assert cli.main(["lineage", bare]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bare}: no lineage manifest") and err.count("\n") == 1


def test_run_folder_on_an_object_store(capsys: pytest.CaptureFixture[str]) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/lineage-test/run/last.ckpt", b"weights")
    try:
        run_id = lineage.write_manifest("memory://lineage-test/run", "run")["id"]
        assert fs.exists("/lineage-test/run/manifest.json")
        ckpt = "memory://lineage-test/run/last.ckpt"
        lineage.write_manifest(ckpt, "checkpoint", parents=["memory://lineage-test/run/"])
        assert cli.main(["lineage", ckpt]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[1].startswith(f"<- run {run_id} memory://lineage-test/run")
    finally:
        fs.rm("/lineage-test", recursive=True)


def test_a_replaced_parent_is_reported_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run overwritten after an export: best.ckpt is another checkpoint now."""
    ckpt = _artifact(tmp_path / "best.ckpt", b"old weights")
    old_id = lineage.write_manifest(ckpt, "checkpoint")["id"]
    onnx_file = _artifact(tmp_path / "best.onnx", b"graph")
    lineage.write_manifest(onnx_file, "onnx", parents=[ckpt])
    _artifact(tmp_path / "best.ckpt", b"new weights")
    new_id = lineage.write_manifest(ckpt, "checkpoint")["id"]

    chain = lineage.lineage_chain(onnx_file)
    assert [item["id"] for item in chain] == [chain[0]["id"], new_id]
    assert chain[1]["recorded"]["id"] == old_id
    assert f"is now checkpoint {new_id}, the parent was {old_id}" in chain[1]["problem"]
    assert cli.main(["lineage", onnx_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("<- !! not the recorded parent: ")


def test_a_parent_changed_under_its_manifest_is_reported(tmp_path: Path) -> None:
    ckpt = _artifact(tmp_path / "last.ckpt", b"weights")
    data = _artifact(tmp_path / "data.json", b"{}")
    lineage.write_manifest(data, "dataset")
    lineage.write_manifest(ckpt, "checkpoint", parents=[data])
    child = _artifact(tmp_path / "model.onnx", b"graph")
    lineage.write_manifest(child, "onnx", parents=[ckpt])
    assert lineage.lineage_chain(child)[1].get("problem") is None
    (tmp_path / "last.ckpt").write_bytes(b"other weights")  # no new manifest

    chain = lineage.lineage_chain(child)
    assert len(chain) == 2  # the dataset behind the changed file is not followed
    assert "changed since its manifest was written" in chain[1]["problem"]


def test_the_artifact_itself_is_checked_against_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file = _artifact(tmp_path / "model.onnx", b"graph")
    lineage.write_manifest(onnx_file, "onnx")
    (tmp_path / "model.onnx").write_bytes(b"another graph")
    assert cli.main(["lineage", onnx_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("   !! ") and "changed since its manifest" in lines[1]
