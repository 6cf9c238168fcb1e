"""DETR pieces on hand-made cases: matcher assignments, the criterion's value, output
shapes, float64, weights loading with another class count or backbone."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torchvision import tv_tensors
from torchvision.ops import FrozenBatchNorm2d

import visionforge
from visionforge_dino.detr.matcher import HungarianMatcher
from visionforge_dino.detr.model import DETR
from visionforge_dino.detr.targets import NormalizedTarget
from visionforge_dino.detr.weights import to_official_layout

TINY: dict[str, Any] = {
    "type": "detr_r50",
    "backbone": "resnet18",
    "hidden_dim": 16,
    "nheads": 2,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 32,
    "num_queries": 5,
    "num_classes": 3,
}


def _target(labels: list[int], boxes: list[list[float]]) -> NormalizedTarget:
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "boxes": torch.tensor(boxes, dtype=torch.float64),
    }


def _assignment(result: tuple[torch.Tensor, torch.Tensor]) -> dict[int, int]:
    return dict(zip(result[0].tolist(), result[1].tolist(), strict=True))


@pytest.mark.parametrize(
    ("class_cost", "costs"),
    [("softmax", (1, 5, 2)), ("focal", (2, 5, 2)), ("softmax", (0, 1, 0)), ("softmax", (0, 0, 1))],
)
def test_matcher_follows_the_boxes(class_cost: str, costs: tuple[float, float, float]) -> None:
    """Queries 0..2 sit exactly on targets 2, 0, 1; class scores are uninformative; the L1
    and the GIoU cost each find the assignment alone."""
    target = _target([0, 1, 0], [[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.3, 0.2], [0.8, 0.7, 0.2, 0.4]])
    boxes = target["boxes"][[2, 0, 1]][None]
    logits = torch.zeros(1, 3, 3, dtype=torch.float64)
    matcher = HungarianMatcher(*costs, class_cost=class_cost)  # type: ignore[arg-type]
    assert _assignment(matcher(logits, boxes, [target])[0]) == {0: 2, 1: 0, 2: 1}


def test_matcher_uses_the_class_when_boxes_tie() -> None:
    """Two queries on the same box; query 0 says class 1, query 1 says class 0."""
    target = _target([0, 1], [[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]] * 2], dtype=torch.float64)
    logits = torch.tensor([[[0.0, 4.0, 0.0], [4.0, 0.0, 0.0]]], dtype=torch.float64)
    assert _assignment(HungarianMatcher()(logits, boxes, [target])[0]) == {0: 1, 1: 0}


def test_matcher_picks_the_closest_queries_and_handles_empty_images() -> None:
    boxes = torch.tensor(
        [[[0.1, 0.1, 0.1, 0.1], [0.52, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]] * 2,
        dtype=torch.float64,
    )
    logits = torch.zeros(2, 3, 3, dtype=torch.float64)
    targets = [_target([1], [[0.5, 0.5, 0.2, 0.2]]), _target([], [])]
    targets[1]["boxes"] = targets[1]["boxes"].reshape(0, 4)
    first, empty = HungarianMatcher()(logits, boxes, targets)
    assert _assignment(first) == {1: 0}
    assert empty[0].numel() == 0 and empty[0].dtype == torch.int64


def _batch(boxes_px: list[list[float]], labels: list[int], size: tuple[int, int]) -> dict[str, Any]:
    boxes = tv_tensors.BoundingBoxes(torch.tensor(boxes_px), format="XYXY", canvas_size=size)
    return {"target": [{"boxes": boxes, "labels": torch.tensor(labels), "orig_size": size}]}


def test_criterion_value_computed_by_hand() -> None:
    """Query 0 (p = .5/.25/.25) overlaps the class-0 target with IoU = GIoU = 0.5 and L1 0.25;
    query 1 (p = .2/.2/.6) is far away and goes to no-object (CE weight 0.1)."""
    logits = torch.tensor([[[math.log(2), 0.0, 0.0], [0.0, 0.0, math.log(3)]]], dtype=torch.float64)
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.25], [0.1, 0.1, 0.1, 0.1]]], dtype=torch.float64)
    batch = _batch([[25.0, 25.0, 75.0, 75.0]], [0], (100, 100))
    losses = visionforge.losses.build({"type": "detr"})(
        {"pred_logits": logits, "pred_boxes": boxes}, batch
    )
    ce = (-math.log(0.5) + 0.1 * -math.log(0.6)) / 1.1
    assert float(losses["loss_ce"]) == pytest.approx(ce, abs=1e-12)
    assert float(losses["loss_bbox"]) == pytest.approx(0.25, abs=1e-12)
    assert float(losses["loss_giou"]) == pytest.approx(0.5, abs=1e-12)
    assert float(losses["loss"]) == pytest.approx(ce + 5 * 0.25 + 2 * 0.5, abs=1e-12)
    assert float(losses["class_error"]) == 0 and float(losses["cardinality_error"]) == 0


def test_criterion_on_background_only_images_still_reaches_every_head() -> None:
    logits = torch.randn(1, 4, 3, requires_grad=True)
    boxes = torch.rand(1, 4, 4, requires_grad=True)
    batch = _batch([], [], (32, 32))
    batch["target"][0]["boxes"] = tv_tensors.BoundingBoxes(
        torch.zeros(0, 4), format="XYXY", canvas_size=(32, 32)
    )
    losses = visionforge.losses.build({"type": "detr"})(
        {"pred_logits": logits, "pred_boxes": boxes}, batch
    )
    losses["loss"].backward()
    assert (
        float(losses["loss_bbox"].detach()) == 0
        and boxes.grad is not None
        and logits.grad is not None
    )


@pytest.fixture(scope="module")
def tiny() -> DETR:
    torch.manual_seed(0)
    return visionforge.models.build(TINY)


def test_output_shapes_in_training_and_export(tiny: DETR) -> None:
    images = torch.randn(2, 3, 64, 96)
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, 40:] = True
    tiny.train()
    out = tiny({"image": images, "mask": mask})
    assert out["pred_logits"].shape == (2, 5, 4) and out["pred_boxes"].shape == (2, 5, 4)
    assert len(out["aux_outputs"]) == 1
    assert out["aux_outputs"][0]["pred_logits"].shape == (2, 5, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    tiny.eval()
    with torch.no_grad():
        detections = tiny.postprocess(
            tiny({"image": images, "mask": mask}), {"image": images, "mask": mask}
        )
        graph = tiny.export_module()(images)
    boxes, scores, labels = graph["boxes"], graph["scores"], graph["labels"]
    assert [d["boxes"].shape for d in detections] == [(5, 4), (5, 4)]
    assert detections[1]["boxes"][:, 1::2].max() <= 40 + 1e-4  # scaled to the unpadded 40 rows
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5) and labels.shape == (2, 5)
    assert int(labels.max()) < 3 and ((scores > 0) & (scores < 1)).all()


def test_runs_in_float64_without_a_mask(tiny: DETR) -> None:
    model = visionforge.models.build(TINY).double().eval()
    with torch.no_grad():
        out = model({"image": torch.randn(1, 3, 64, 64, dtype=torch.float64)})
    assert out["pred_logits"].dtype == out["pred_boxes"].dtype == torch.float64
    assert out["aux_outputs"][0]["pred_boxes"].dtype == torch.float64


def test_new_class_count_and_other_backbone_keep_the_rest(tiny: DETR, tmp_path: Path) -> None:
    path = tmp_path / "official.pth"
    torch.save({"model": to_official_layout(tiny.state_dict())}, path)
    with pytest.warns(UserWarning, match="re-initialized class_embed.weight, class_embed.bias"):
        other = visionforge.models.build({**TINY, "num_classes": 7, "weights": f"file://{path}"})
    assert other.weights_report is not None
    assert other.weights_report.reinitialized == ["class_embed.weight", "class_embed.bias"]
    assert other.class_embed.weight.shape == (8, 16)
    assert torch.equal(other.query_embed.weight, tiny.query_embed.weight)
    # the R50 -> R101 transfer, in small: a ResNet-18 file into a ResNet-34 DETR
    with pytest.warns(UserWarning, match="kept the initial backbone"):
        deeper = visionforge.models.build({**TINY, "backbone": "resnet34", "weights": str(path)})
    report = deeper.weights_report
    assert report is not None and not report.reinitialized
    assert all(k.startswith("backbone.") for k in report.not_loaded + report.ignored)
    assert "transformer.decoder.norm.weight" in report.loaded
    own = tiny.state_dict()
    for key, value in deeper.state_dict().items():
        if not key.startswith("backbone."):
            assert torch.equal(value, own[key]), key


def test_backbone_from_timm_or_torchvision_with_imagenet_weights(tmp_path: Path) -> None:
    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet, path)
    for source in ("torchvision", "timm"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = visionforge.models.build(
                {**TINY, "backbone_source": source, "backbone_weights": str(path)}
            )
        body = model.backbone.body.state_dict()
        assert torch.equal(body["layer4.1.bn2.running_var"], imagenet["layer4.1.bn2.running_var"])
        assert torch.equal(body["conv1.weight"], imagenet["conv1.weight"])
        trainable = {
            n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad
        }
        assert trainable == {"layer2", "layer3", "layer4"}


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_backbone_from_random_weights_trains_its_batch_norm_and_every_stage(
    source: str, tmp_path: Path
) -> None:
    model = visionforge.models.build({**TINY, "backbone_source": source, "backbone_norm": "batch"})
    body = model.backbone.body
    norms = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())  # stem and layer1 too
    stem_mean = body.state_dict()["bn1.running_mean"].clone()
    model.train()
    model.backbone(torch.rand(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool))
    assert not torch.equal(body.state_dict()["bn1.running_mean"], stem_mean)  # updated

    imagenet = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save({k: v for k, v in imagenet.items() if "num_batches" not in k}, path)
    loaded = visionforge.models.build(
        {**TINY, "backbone_source": source, "backbone_norm": "batch", "backbone_weights": str(path)}
    )
    state = loaded.backbone.body.state_dict()
    assert torch.equal(state["layer4.1.bn2.running_var"], imagenet["layer4.1.bn2.running_var"])
