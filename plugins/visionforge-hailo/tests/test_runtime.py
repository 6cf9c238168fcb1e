"""The runtime predictor: onnxruntime fallback equals PyTorch; HailoRT path (test double of
hailo_platform) gets uint8 NHWC pixels and returns the same outputs; latency helper."""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from visionforge import lineage
from visionforge.data import IMAGENET_MEAN, IMAGENET_STD
from visionforge.export.chain import load_artifact
from visionforge_hailo.configs import HailoExporterConfig
from visionforge_hailo.exporter import HailoExporter
from visionforge_hailo.runtime import HailoPredictor, measure_latency


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).eval()


@pytest.fixture
def exported(tmp_path: Path, checkpoint: str, fake_dfc: Any) -> tuple[nn.Module, str]:
    """A torch net exported to ONNX (opset 13) and through the hailo exporter (DFC double)."""
    net = _net()
    onnx_path = tmp_path / "best.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, 16, 16),),
            str(onnx_path),
            dynamo=False,
            opset_version=13,
            input_names=["image"],
            output_names=["logits"],
        )
    lineage.write_manifest(str(onnx_path), "onnx", parents=[checkpoint])
    artifact = HailoExporter(HailoExporterConfig()).export(
        load_artifact(str(onnx_path)), out=str(tmp_path / "best.hef")
    )
    return net, artifact.path


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def _torch_reference(net: nn.Module, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((x - mean) / std).numpy()


def test_onnxruntime_fallback_equals_pytorch(exported: tuple[nn.Module, str]) -> None:
    net, hef = exported
    predictor = HailoPredictor.from_export(hef)
    assert predictor.backend == "onnxruntime" and predictor.class_names == ["ace", "king"]
    images = _images(3)
    outputs = predictor(images)
    assert list(outputs) == ["logits"] and outputs["logits"].shape == (3, 2)
    np.testing.assert_allclose(outputs["logits"], _torch_reference(net, images), atol=1e-5)
    single = predictor(images[0])
    np.testing.assert_allclose(single["logits"], outputs["logits"][:1], atol=1e-6)
    with pytest.raises(Exception, match=r"the model takes \[B, 16, 16, 3\]"):
        predictor(images[:, :8])


class _Stream:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape
        self.format: Any = None

    def set_format_type(self, value: Any) -> None:
        self.format = value


class _Binding:
    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None

    def set_buffer(self, buffer: np.ndarray) -> None:
        self.buffer = buffer


class _Bindings:
    def __init__(self, outputs: list[str]) -> None:
        self._input = _Binding()
        self._outputs = {name: _Binding() for name in outputs}

    def input(self) -> _Binding:
        return self._input

    def output(self, name: str) -> _Binding:
        return self._outputs[name]


def fake_hailo_platform(onnx_path: str) -> types.ModuleType:
    """A test double of HailoRT's Python API (VDevice.create_infer_model, bindings, run) whose
    "device" normalizes uint8 NHWC pixels on chip and runs the compiled graph."""
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    mean = np.array(IMAGENET_MEAN, np.float32) * 255
    std = np.array(IMAGENET_STD, np.float32) * 255
    seen: list[np.ndarray] = []

    class Configured:
        def __init__(self, model: InferModel) -> None:
            self.model = model

        def create_bindings(self) -> _Bindings:
            return _Bindings([o.name for o in self.model.outputs])

        def run(self, bindings: list[_Bindings], timeout: int) -> None:
            for binding in bindings:
                pixels = binding.input().buffer
                assert pixels is not None and pixels.dtype == np.uint8
                assert pixels.shape == (16, 16, 3)
                seen.append(pixels)
                x = ((pixels.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
                (logits,) = session.run(None, {"image": x})
                out = binding.output("best/fc1").buffer
                assert out is not None
                out[:] = logits[0]

    class InferModel:
        def __init__(self, hef: str) -> None:
            self.hef = hef
            self._input = _Stream("best/input_layer1", (16, 16, 3))
            self.outputs = [_Stream("best/fc1", (2,))]

        def input(self) -> _Stream:
            return self._input

        def configure(self) -> Configured:
            return Configured(self)

    class VDevice:
        def create_infer_model(self, hef: str) -> InferModel:
            return InferModel(hef)

    module = types.ModuleType("hailo_platform")
    module.VDevice = VDevice  # type: ignore[attr-defined]
    module.FormatType = types.SimpleNamespace(UINT8="uint8", FLOAT32="float32")  # type: ignore[attr-defined]
    module.seen = seen  # type: ignore[attr-defined]
    return module


def test_hailort_backend_same_call_same_output(
    exported: tuple[nn.Module, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    net, hef = exported
    platform = fake_hailo_platform(hef.removesuffix(".hef") + ".hailo.onnx")
    monkeypatch.setitem(sys.modules, "hailo_platform", platform)
    predictor = HailoPredictor.from_export(hef)
    assert predictor.backend == "hailort"
    images = _images(2)
    outputs = predictor(images)
    assert len(platform.seen) == 2  # one binding per image, uint8 pixels
    np.testing.assert_array_equal(platform.seen[1], images[1])
    np.testing.assert_allclose(outputs["logits"], _torch_reference(net, images), atol=1e-5)
    fallback = HailoPredictor.from_export(hef, backend="onnxruntime")(images)
    np.testing.assert_allclose(outputs["logits"], fallback["logits"], atol=1e-6)


def test_latency_helper(exported: tuple[nn.Module, str]) -> None:
    predictor = HailoPredictor.from_export(exported[1])
    stats = measure_latency(predictor, _images(1), warmup=2, runs=5)
    assert stats["runs"] == 5
    assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"]
    assert stats["std_ms"] >= 0 and stats["mean_ms"] >= stats["min_ms"]
