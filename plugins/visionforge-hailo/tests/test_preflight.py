"""Preflight without the DFC: batch 1, opset range, IR version, simplify with parity,
unsupported ops with the end nodes to cut before them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from visionforge.export import ExportError, ParityError
from visionforge_hailo.preflight import preflight

Graph = Callable[..., onnx.ModelProto]


def _save(model: onnx.ModelProto, folder: Path, name: str = "m.onnx") -> str:
    path = folder / name
    onnx.save(model, str(path))
    return str(path)


def test_batch_fixed_ir_lowered_and_outputs_unchanged(tmp_path: Path, graph: Graph) -> None:
    source = _save(graph(opset=13, ir_version=10), tmp_path)
    dest = tmp_path / "out.onnx"
    report = preflight(source, str(dest))
    assert report.input_shape == [1, 3, 16, 16]
    assert report.ir_version == (10, 7) and report.opset == (13, 13)
    assert "IR version 10 lowered to 7" in report.notes
    assert report.max_abs_diff <= 1e-5 and report.unsupported == []
    model = onnx.load(str(dest))
    assert model.ir_version == 7
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 16, 16]
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = onnxruntime.InferenceSession(source).run(None, {"image": x})[0]
    got = onnxruntime.InferenceSession(str(dest)).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_opset_converted_into_range(tmp_path: Path, graph: Graph) -> None:
    model = graph(opset=11, ir_version=6)
    report = preflight(_save(model, tmp_path), str(tmp_path / "o.onnx"), opset_range=(12, 13))
    assert report.opset == (11, 12)
    assert {o.version for o in onnx.load(str(tmp_path / "o.onnx")).opset_import} == {12}


def test_opset_without_adapter_uses_the_reexport_or_says_how(tmp_path: Path, graph: Graph) -> None:
    source = _save(graph(opset=18, ir_version=8), tmp_path)  # Relu 14 -> 13: none
    with pytest.raises(ExportError, match=r"cannot take opset 18 to 13 .*TorchScript exporter"):
        preflight(source, str(tmp_path / "o.onnx"))
    asked: list[int] = []

    def reexport(opset: int) -> onnx.ModelProto:
        asked.append(opset)
        return graph(opset=opset, ir_version=7)

    report = preflight(source, str(tmp_path / "o.onnx"), reexport=reexport)
    assert asked == [13] and report.opset == (18, 13)
    assert report.notes[0].startswith("opset: re-exported at opset 13")


def test_unsupported_op_listed_with_end_nodes_to_cut(tmp_path: Path, graph: Graph) -> None:
    source = _save(graph(tail="TopK"), tmp_path)
    report = preflight(source, str(tmp_path / "o.onnx"))
    assert report.unsupported == [("TopK", "/topk")]
    assert report.suggested_end_nodes == ["/head/fc"]
    message = report.unsupported_message(source)
    assert "TopK (node '/topk')" in message
    assert "--end-node-names /head/fc (export.end_node_names)" in message
    cut = preflight(source, str(tmp_path / "c.onnx"), end_node_names=["/head/fc"])
    assert cut.unsupported == []
    with pytest.raises(ExportError, match="no node named"):
        preflight(source, str(tmp_path / "c.onnx"), end_node_names=["/nope"])


def test_dynamic_spatial_axes_are_refused(tmp_path: Path, graph: Graph) -> None:
    model = graph()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(ExportError, match=r"axis 2 is dynamic \(height\)"):
        preflight(_save(model, tmp_path), str(tmp_path / "o.onnx"))


def test_a_reexport_that_computes_something_else_fails_parity(tmp_path: Path, graph: Graph) -> None:
    source = _save(graph(opset=18, ir_version=8), tmp_path)

    def reexport(opset: int) -> onnx.ModelProto:
        model = graph(opset=opset, ir_version=7)
        weights = model.graph.initializer[1]
        fc = onnx.numpy_helper.to_array(weights) * 1.01
        weights.CopyFrom(onnx.numpy_helper.from_array(fc.astype(np.float32), weights.name))
        return model

    with pytest.raises(ParityError, match=r"after preflight \(opset 18 -> 13, simplify\)"):
        preflight(source, str(tmp_path / "o.onnx"), reexport=reexport)
    assert not (tmp_path / "o.onnx").exists()
