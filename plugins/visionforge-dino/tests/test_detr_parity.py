"""DETR equals the original facebookresearch/detr on the golden fixture (float64), and the
official checkpoint layouts load with no missing or unexpected keys.

``data/detr_golden.pt`` is written by ``tools/make_detr_golden.py`` from the original code;
``data/detr_r*_keys.json`` list the official release files' keys and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision import tv_tensors

import visionforge
from visionforge.errors import CheckpointError
from visionforge_dino.detr.model import DETR
from visionforge_dino.detr.weights import load_state_into

DATA = Path(__file__).parent / "data"
ATOL = 1e-10


def _seeded(shape: tuple[int, ...], seed: int, mean: float, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return mean + torch.randn(shape, generator=generator, dtype=torch.float64) * std


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return torch.load(DATA / "detr_golden.pt", weights_only=True)


def _official_state(golden: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: _seeded(*spec) for k, spec in golden["weights"].items()}


def _images(golden: dict[str, Any]) -> torch.Tensor:
    images = _seeded(golden["image_shape"], golden["image_seed"], 0.0, 1.0)
    return images.masked_fill(golden["mask"][:, None], 0.0)


def _tiny_detr(golden: dict[str, Any]) -> DETR:
    cfg = dict(golden["config"])
    model = visionforge.models.build({"type": "detr_r50", **cfg})
    return model.double().eval()


@pytest.fixture(scope="module")
def loaded(golden: dict[str, Any]) -> DETR:
    model = _tiny_detr(golden)
    report = load_state_into(model, _official_state(golden), "golden")
    assert report.complete, report.summary()
    assert len(report.loaded) == len(golden["weights"])
    return model


def _batch(golden: dict[str, Any]) -> dict[str, Any]:
    targets = []
    for i, t in enumerate(golden["targets"]):
        height, width = t["size"]
        boxes = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(height, width))
        targets.append(
            {"boxes": boxes, "labels": t["labels"], "image_id": i, "orig_size": (height, width)}
        )
    return {"image": _images(golden), "mask": golden["mask"], "target": targets}


@pytest.fixture(scope="module")
def outputs(loaded: DETR, golden: dict[str, Any]) -> dict[str, Any]:
    with torch.no_grad():
        return loaded(_batch(golden))


def test_outputs_equal_the_original(outputs: dict[str, Any], golden: dict[str, Any]) -> None:
    out = outputs
    assert out["pred_logits"].dtype == torch.float64
    torch.testing.assert_close(out["pred_logits"], golden["pred_logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], golden["pred_boxes"], atol=ATOL, rtol=0)
    assert len(out["aux_outputs"]) == len(golden["aux_outputs"])
    for ours, theirs in zip(out["aux_outputs"], golden["aux_outputs"], strict=True):
        torch.testing.assert_close(ours["pred_logits"], theirs["pred_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(ours["pred_boxes"], theirs["pred_boxes"], atol=ATOL, rtol=0)


def test_losses_equal_the_original(outputs: dict[str, Any], golden: dict[str, Any]) -> None:
    criterion = visionforge.losses.build({"type": "detr"})
    losses = criterion(outputs, _batch(golden))
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    for name, expected in golden["weighted_losses"].items():
        weight = weights[name.rsplit("_", 1)[0] if name[-1].isdigit() else name]
        torch.testing.assert_close(weight * losses[name], expected, atol=ATOL, rtol=0)
    total = sum(golden["weighted_losses"].values())
    torch.testing.assert_close(losses["loss"], total, atol=ATOL, rtol=0)
    assert float(losses["class_error"]) == pytest.approx(float(golden["class_error"]), abs=1e-4)


def test_postprocess_equals_the_original(
    loaded: DETR, outputs: dict[str, Any], golden: dict[str, Any]
) -> None:
    detections = loaded.postprocess(outputs, _batch(golden))
    for ours, theirs in zip(detections, golden["postprocess"], strict=True):
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=ATOL, rtol=0)
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-8, rtol=0)


def test_a_mapping_error_changes_the_outputs(golden: dict[str, Any]) -> None:
    """Loading two same-shaped tensors under each other's name must not go unnoticed."""
    state = _official_state(golden)
    a, b = "transformer.encoder.layers.0.norm1.weight", "transformer.encoder.layers.0.norm2.weight"
    state[a], state[b] = state[b], state[a]
    model = _tiny_detr(golden)
    load_state_into(model, state, "swapped")
    with torch.no_grad():
        out = model(_batch(golden))
    assert (out["pred_logits"] - golden["pred_logits"]).abs().max() > 1e-6


def test_misnamed_or_missing_keys_are_refused(loaded: DETR, golden: dict[str, Any]) -> None:
    official = _official_state(golden)
    misnamed = {k.replace("backbone.0.body.", "backbone.0."): v for k, v in official.items()}
    with pytest.raises(CheckpointError, match=r"100 unexpected \['backbone.0.bn1.bias'"):
        load_state_into(loaded, misnamed, "misnamed")
    del official["query_embed.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing \['query_embed.weight'\]"):
        load_state_into(loaded, official, "truncated")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detr_r50", "detr_r101"])
def test_the_full_official_layout_loads(name: str) -> None:
    shapes = json.loads((DATA / f"{name}_keys.json").read_text())
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(tuple(s), generator=generator) for k, s in shapes.items()}
    model = visionforge.models.build({"type": name, "num_classes": 91})
    report = load_state_into(model, state, name)
    assert report.complete, report.summary()
    assert len(report.loaded) == len(shapes)
    assert model.class_names[1] == "person" and model.category_ids[90] == 90
    for key in ("class_embed.weight", "backbone.body.layer4.2.bn3.running_var"):
        official = key.replace("backbone.body.", "backbone.0.body.")
        assert torch.equal(model.state_dict()[key], state[official])
