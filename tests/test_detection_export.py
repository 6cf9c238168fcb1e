"""ONNX export of a detector through its ``export_module()``: image in; ``boxes`` (xyxy
pixels of the input), ``scores`` and ``labels`` out; onnxruntime agrees with PyTorch and
with the model's own ``postprocess`` (fixed spatial size, dynamic batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from detection_support import TinyDetector, TinyDetectorConfig
from test_engine_support import single_thread  # noqa: F401 (autouse fixture)

from visionforge.components.configs import OnnxExporterConfig
from visionforge.export.onnx import OnnxExporter


@pytest.mark.slow
def test_detector_exports_boxes_scores_labels_with_onnxruntime_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyDetector(TinyDetectorConfig(num_queries=5)).eval()
    height, width = 48, 64
    example = torch.randn(1, 3, height, width)
    artifact = OnnxExporter(OnnxExporterConfig()).export(
        model, out=str(tmp_path / "det.onnx"), example=example
    )
    assert artifact.manifest["metrics"]["max_abs_diff"] < 1e-4
    session = onnxruntime.InferenceSession(artifact.path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    images = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(1))
    boxes, scores, labels = session.run(None, {"image": images.numpy()})
    assert boxes.shape == (3, 5, 4) and scores.shape == (3, 5) and labels.dtype == np.int64
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    with torch.no_grad():
        outputs = model({"image": images})
        batch = {"target": [{"orig_size": (height, width), "size": (height, width)}] * 3}
        expected = model.postprocess(outputs, batch)
    for index, want in enumerate(expected):
        order = want["scores"].argsort(descending=True)
        np.testing.assert_allclose(scores[index], want["scores"][order].numpy(), atol=1e-5)
        np.testing.assert_array_equal(labels[index], want["labels"][order].numpy())
        np.testing.assert_allclose(boxes[index], want["boxes"][order].numpy(), atol=1e-3)
    assert boxes[..., [0, 2]].max() <= width + 1e-3 and boxes[..., [1, 3]].max() <= height + 1e-3
    with pytest.raises(Exception, match="(?i)dimension|shape|invalid"):
        session.run(None, {"image": np.zeros((1, 3, height + 8, width), np.float32)})
