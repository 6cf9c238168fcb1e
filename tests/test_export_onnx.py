"""ONNX exporter: dynamic batch, parity in onnxruntime, opset, failures leave no file."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch
from torch import nn

from visionforge.components.configs import OnnxExporterConfig
from visionforge.export import ExportError, ParityError
from visionforge.export.onnx import build_onnx, other_batch, output_names
from visionforge.interfaces import Artifact, Exporter


class Wrapped(nn.Module):
    """A batch-taking model whose export network is the inner timm classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = timm.create_model("test_efficientnet", num_classes=5)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.net(batch["image"])}

    def export_module(self) -> nn.Module:
        return self.net


class Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.linear(x), "boxes": x.sigmoid()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.slow
def test_timm_model_parity_with_dynamic_batch(tmp_path: Path) -> None:
    model = Wrapped().train()
    example = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "model.onnx"
    parent = tmp_path / "best.ckpt"
    parent.write_bytes(b"weights")

    started = time.monotonic()
    artifact = build_onnx(OnnxExporterConfig()).export(
        model, out=str(out), example=example, parents=[str(parent)]
    )
    elapsed = time.monotonic() - started

    assert model.training, "the exporter must restore the model's mode"
    assert artifact.path == str(out) and artifact.kind == "onnx"
    assert _leftovers(tmp_path) == ["best.ckpt", "model.onnx", "model.onnx.manifest.json"]
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model.eval()
    for batch_size in (1, 3):
        x = torch.randn(batch_size, 3, 32, 32)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = model.net(x).numpy()
        assert got.shape == (batch_size, 5)
        np.testing.assert_allclose(got, want, atol=1e-4)

    manifest = json.loads((tmp_path / "model.onnx.manifest.json").read_text())
    assert manifest == artifact.manifest
    assert manifest["kind"] == "onnx" and manifest["opset"] == 18
    assert 0 <= manifest["metrics"]["max_abs_diff"] <= 1e-4
    assert manifest["parents"] == [{"path": str(parent), "id": None, "sha256": None}]
    assert manifest["size"] == out.stat().st_size
    # the cost is the export's own time: most of the call, never more than it
    assert 0.5 * elapsed <= manifest["cost"]["wall_seconds"] <= elapsed + 0.001  # ms rounding
    assert manifest["cost"]["device"] == "cpu"


def test_parity_failure_raises_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "noisy.onnx"
    with pytest.raises(
        ParityError, match=r"noisy\.onnx: onnxruntime differs .* batch sizes 1 and 3"
    ):
        build_onnx(OnnxExporterConfig()).export(Noisy(), out=str(out), example=torch.zeros(1, 8))
    assert _leftovers(tmp_path) == []


def test_unexportable_model_names_the_cause(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"dd\.onnx: torch\.onnx\.export .* data-dependent"):
        build_onnx(OnnxExporterConfig()).export(
            DataDependent(), out=str(tmp_path / "dd.onnx"), example=torch.ones(1, 4)
        )
    assert _leftovers(tmp_path) == []


def test_opset_option_and_named_outputs(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "heads.onnx"
    cfg = OnnxExporterConfig(opset=17)
    artifact = build_onnx(cfg).export(TwoHeads(), out=str(out), example=torch.randn(2, 4))
    model = onnx.load(str(out))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    assert [o.name for o in model.graph.output] == ["scores", "boxes"]
    assert artifact.manifest["outputs"] == ["scores", "boxes"]


def test_static_batch_checks_only_the_example(tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    build_onnx(OnnxExporterConfig(dynamic_batch=False)).export(
        TwoHeads(), out=str(out), example=torch.randn(2, 4)
    )
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 4]


def test_helpers() -> None:
    x = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)
    bigger = other_batch(x)
    assert bigger.shape == (4, 3, 4)
    assert torch.equal(bigger[:2], x) and torch.equal(bigger[2], x[0].flip(-1))
    assert other_batch(x[:1]).shape[0] == 3
    assert output_names(torch.zeros(1)) == ["output"]
    assert output_names((torch.zeros(1), [torch.zeros(1)])) == ["0", "1_0"]
    assert output_names({"logits": torch.zeros(1), "aux": {"a": torch.zeros(1)}}) == [
        "logits",
        "aux_a",
    ]


def test_non_tensor_example_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="example input must be a tensor"):
        build_onnx(OnnxExporterConfig()).export(
            TwoHeads(), out=str(tmp_path / "x.onnx"), example=[1, 2]
        )  # type: ignore[arg-type]


def test_export_to_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the staging folder goes
    fs = fsspec.filesystem("memory")
    out = "memory://exports/heads.onnx"
    artifact = build_onnx(OnnxExporterConfig()).export(
        TwoHeads(), out=out, example=torch.randn(1, 4)
    )
    assert fs.exists("/exports/heads.onnx") and fs.exists("/exports/heads.onnx.manifest.json")
    onnx.checker.check_model(onnx.load_from_string(fs.cat_file("/exports/heads.onnx")))
    assert artifact.manifest["size"] == fs.size("/exports/heads.onnx")
    assert _leftovers(tmp_path) == []
    fs.rm("/exports", recursive=True)


def test_onnx_exporter_follows_the_exporter_protocol(tmp_path: Path) -> None:
    exporter = build_onnx(OnnxExporterConfig(input_size=(4,)))
    assert isinstance(exporter, Exporter)
    assert exporter.source_kinds == ("model",)
    artifact = exporter.export(TwoHeads(), out=str(tmp_path / "heads.onnx"))
    # the default example holds two items: a batch axis traced at 1 would be specialized
    assert artifact.manifest["input"]["shape"] == [2, 4]
    assert artifact.manifest["dynamic_batch"] is True
    fixed = build_onnx(OnnxExporterConfig(input_size=(4,), dynamic_batch=False))
    artifact = fixed.export(TwoHeads(), out=str(tmp_path / "fixed.onnx"))
    assert artifact.manifest["input"]["shape"] == [1, 4]


def test_missing_example_and_input_size_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no example input; pass example= or set export\."):
        build_onnx(OnnxExporterConfig()).export(TwoHeads(), out=str(tmp_path / "x.onnx"))


def test_an_artifact_source_is_rejected(tmp_path: Path) -> None:
    source = Artifact(path=str(tmp_path / "m.onnx"), kind="onnx")
    with pytest.raises(ExportError, match="takes a model"):
        build_onnx(OnnxExporterConfig()).export(source, out=str(tmp_path / "x.onnx"))
    assert _leftovers(tmp_path) == []
