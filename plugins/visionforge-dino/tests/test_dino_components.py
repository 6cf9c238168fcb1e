"""DINO's pieces on hand-made cases: denoising queries (counts, layout, masks, noise bounds),
query selection and output shapes, the criterion against a hand computation, postprocess,
float64, and background-only batches."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from detection_support import TINY_DINO
from torchvision import tv_tensors
from torchvision.ops import box_convert, generalized_box_iou

import visionforge
from visionforge_dino.detr.matcher import HungarianMatcher
from visionforge_dino.detr.targets import NormalizedTarget
from visionforge_dino.dino.criterion import DinoCriterion
from visionforge_dino.dino.denoising import denoising_queries, group_count, noised_boxes
from visionforge_dino.dino.model import DINO, top_detections


def tiny_dino(**overrides: Any) -> DINO:
    torch.manual_seed(0)
    model = visionforge.models.build({**TINY_DINO, **overrides})
    assert isinstance(model, DINO)
    return model


def _target(boxes: list[list[float]], labels: list[int], size: tuple[int, int]) -> dict[str, Any]:
    return {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=size
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "orig_size": size,
    }


def _batch() -> dict[str, Any]:
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, 48:, :] = True
    mask[1, :, 80:] = True
    images[1][:, mask[1]] = 0
    targets = [
        _target([[4, 6, 40, 50], [50, 10, 90, 30]], [0, 2], (64, 96)),
        _target([[10, 10, 60, 40]], [1], (48, 80)),
    ]
    return {"image": images, "mask": mask, "target": targets}


def _normalized(counts: list[int], seed: int = 0) -> list[NormalizedTarget]:
    generator = torch.Generator().manual_seed(seed)
    result: list[NormalizedTarget] = []
    for n in counts:
        centers = 0.3 + 0.4 * torch.rand(n, 2, generator=generator)
        sizes = 0.1 + 0.2 * torch.rand(n, 2, generator=generator)
        result.append(
            {
                "boxes": torch.cat([centers, sizes], 1),
                "labels": torch.randint(0, 5, (n,), generator=generator),
            }
        )
    return result


# ----------------------------------------------------------------------------- denoising


def test_group_count_follows_the_busiest_image() -> None:
    assert group_count(100, 10) == 10
    assert group_count(100, 7) == 14
    assert group_count(100, 250) == 1
    assert group_count(100, 0) == 100


def test_denoising_layout_and_attention_mask() -> None:
    targets = _normalized([3, 1])
    embedding = torch.nn.Embedding(6, 8)
    torch.manual_seed(0)
    dn = denoising_queries(
        targets,
        dn_number=6,
        label_noise_ratio=0.0,
        box_noise_scale=0.0,
        num_classes=5,
        num_queries=4,
        label_embedding=embedding,
    )
    assert dn is not None
    assert (dn.groups, dn.max_objects, dn.pad) == (2, 3, 12)
    assert dn.content.shape == (2, 12, 8) and dn.anchors.shape == (2, 12, 4)
    for b, target in enumerate(targets):
        n = len(target["labels"])
        for chunk in range(4):  # group 0 +, group 0 -, group 1 +, group 1 -
            slots = slice(chunk * 3, chunk * 3 + n)
            expected = embedding(target["labels"])
            torch.testing.assert_close(dn.content[b, slots], expected)
            torch.testing.assert_close(
                dn.anchors[b, slots].sigmoid(), target["boxes"], atol=1e-6, rtol=0
            )
            unused = slice(chunk * 3 + n, chunk * 3 + 3)
            assert dn.content[b, unused].abs().sum() == 0 and dn.anchors[b, unused].abs().sum() == 0
    mask = dn.attn_mask
    assert mask.shape == (16, 16)
    assert mask[12:, :12].all() and not mask[12:, 12:].any()  # matching queries see no DN
    assert not mask[:6, :6].any() and not mask[6:12, 6:12].any()  # inside a group: visible
    assert mask[:6, 6:12].all() and mask[6:12, :6].all()  # groups do not see each other
    assert not mask[:12, 12:].any()  # DN queries see the matching ones


def test_no_objects_means_no_denoising() -> None:
    dn = denoising_queries(
        _normalized([0, 0]),
        dn_number=100,
        label_noise_ratio=0.5,
        box_noise_scale=1.0,
        num_classes=5,
        num_queries=4,
        label_embedding=torch.nn.Embedding(6, 8),
    )
    assert dn is None


def test_box_noise_bounds_for_positives_and_negatives() -> None:
    torch.manual_seed(3)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.3]]).repeat(4000, 1)
    negative = torch.arange(4000) % 2 == 1
    noised = noised_boxes(boxes, negative, scale=1.0)
    shift = (box_convert(noised, "cxcywh", "xyxy") - box_convert(boxes, "cxcywh", "xyxy")).abs()
    half = boxes[:, 2:].repeat(1, 2) / 2
    ratio = shift / half
    assert (ratio[~negative] < 1 + 1e-5).all()
    assert (ratio[negative] >= 1 - 1e-5).all() and (ratio[negative] < 2 + 1e-5).all()
    # positives spread over [0, 1) of the half size, negatives over [1, 2)
    assert ratio[~negative].mean().item() == pytest.approx(0.5, abs=0.03)
    assert ratio[negative].mean().item() == pytest.approx(1.5, abs=0.03)


def test_label_noise_rate() -> None:
    torch.manual_seed(0)
    targets: list[NormalizedTarget] = [
        {"boxes": torch.full((100, 4), 0.4), "labels": torch.zeros(100, dtype=torch.int64)}
    ]
    embedding = torch.nn.Embedding(5, 4)
    dn = denoising_queries(
        targets,
        dn_number=2000,
        label_noise_ratio=0.5,
        box_noise_scale=0.0,
        num_classes=4,
        num_queries=1,
        label_embedding=embedding,
    )
    assert dn is not None
    changed = (dn.content - embedding.weight[0]).abs().sum(-1) > 0
    # each label is redrawn with p = 0.25 and lands on another class 3 times in 4
    rate = changed.float().mean().item()
    assert rate == pytest.approx(0.25 * 0.75, abs=0.02)


# ----------------------------------------------------------------------------- the model


def test_output_shapes_train_and_eval() -> None:
    model = tiny_dino()
    batch = _batch()
    model.train()
    out = model(batch)
    assert out["pred_logits"].shape == (2, 12, 3) and out["pred_boxes"].shape == (2, 12, 4)
    assert len(out["aux_outputs"]) == 1
    assert out["interm_outputs"]["pred_logits"].shape == (2, 12, 3)
    assert out["interm_outputs"]["pred_boxes"].shape == (2, 12, 4)
    groups = out["dn_meta"]["groups"]
    assert (groups, out["dn_meta"]["max_objects"]) == (3, 2)
    assert [d["pred_logits"].shape for d in out["dn_outputs"]] == [(2, 12, 3)] * 2
    model.eval()
    with torch.no_grad():
        plain = model({"image": batch["image"], "mask": batch["mask"]})
    assert "dn_outputs" not in plain
    assert ((plain["pred_boxes"] >= 0) & (plain["pred_boxes"] <= 1)).all()


def test_matching_queries_do_not_see_the_denoising_queries() -> None:
    model = tiny_dino()  # dropout 0: train mode computes what eval mode computes
    batch = _batch()
    model.train()
    with_dn = model(batch)
    without_dn = model({"image": batch["image"], "mask": batch["mask"]})
    assert "dn_outputs" in with_dn and "dn_outputs" not in without_dn
    torch.testing.assert_close(with_dn["pred_logits"], without_dn["pred_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_dn["pred_boxes"], without_dn["pred_boxes"], atol=1e-6, rtol=0)


def test_skipping_padded_tokens_changes_no_output_loss_or_gradient() -> None:
    """The encoder's FFN skips tokens under padding: in float64, outputs, the loss and every
    gradient equal those of the full computation."""
    batch = _batch()
    batch["image"] = batch["image"].double()
    loss_fn = visionforge.losses.build({"type": "dino"})
    results = []
    for skip in (True, False):
        model = tiny_dino(dim_feedforward=64).double().train()
        model.transformer.encoder.skip_padded_tokens = skip
        torch.manual_seed(3)  # the denoising noise
        out = model(batch)
        loss = loss_fn(out, batch)["loss"]
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((out["pred_logits"], out["pred_boxes"], loss, grads))
    (logits, boxes, loss, grads), (logits0, boxes0, loss0, grads0) = results
    torch.testing.assert_close(logits, logits0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(boxes, boxes0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, loss0, rtol=1e-10, atol=1e-12)
    assert grads.keys() == grads0.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads0[name], rtol=1e-8, atol=1e-10, msg=name)


def test_runs_in_float64() -> None:
    model = tiny_dino().double().eval()
    batch = _batch()
    with torch.no_grad():
        out = model({"image": batch["image"].double(), "mask": batch["mask"]})
    assert out["pred_logits"].dtype == torch.float64 and out["pred_boxes"].dtype == torch.float64


def test_background_only_batch_trains_every_parameter() -> None:
    model = tiny_dino()
    loss_fn = visionforge.losses.build({"type": "dino"})
    batch = _batch()
    batch["target"] = [_target([], [], (64, 96)), _target([], [], (48, 80))]
    model.train()
    losses = loss_fn(model(batch), batch)
    assert torch.isfinite(losses["loss"]) and "loss_ce_dn" not in losses
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


# ----------------------------------------------------------------------------- criterion


def test_criterion_matches_a_hand_computation() -> None:
    logits = torch.tensor([[[2.0, -1.0], [-0.5, 0.3]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.4, 0.2]]])
    target = torch.tensor([[0.52, 0.48, 0.2, 0.25]])
    batch = {
        "target": [_target((box_convert(target, "cxcywh", "xyxy") * 100).tolist(), [0], (100, 100))]
    }
    criterion = DinoCriterion(HungarianMatcher(2.0, 5.0, 2.0, class_cost="focal"))
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, batch)
    # query 0 is the obvious match (right class, nearby box)
    onehot = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    p = logits.sigmoid()
    p_t = p * onehot + (1 - p) * (1 - onehot)
    ce = -(onehot * p.log() + (1 - onehot) * (1 - p).log())
    alpha_t = 0.25 * onehot + 0.75 * (1 - onehot)
    focal = (alpha_t * ce * (1 - p_t) ** 2).sum()
    l1 = (boxes[0, 0] - target[0]).abs().sum()
    giou = generalized_box_iou(
        box_convert(boxes[0, :1], "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
    )[0, 0]
    torch.testing.assert_close(losses["loss_ce"], focal)
    torch.testing.assert_close(losses["loss_bbox"], l1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["loss_giou"], 1 - giou, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        losses["loss"], focal + 5 * l1 + 2 * (1 - giou), atol=1e-5, rtol=1e-5
    )


def test_denoising_terms_supervise_the_positive_queries() -> None:
    model = tiny_dino()
    loss_fn = visionforge.losses.build({"type": "dino"})
    batch = _batch()
    model.train()
    losses = loss_fn(model(batch), batch)
    expected = {
        f"{t}{s}"
        for t in ("loss_ce", "loss_bbox", "loss_giou")
        for s in ("", "_0", "_interm", "_dn", "_dn_0")
    }
    assert expected <= set(losses)
    total = sum(
        value
        * {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}[
            name.split("_")[0] + "_" + name.split("_")[1]
        ]
        for name, value in losses.items()
        if name != "loss"
    )
    torch.testing.assert_close(losses["loss"], total)


# ----------------------------------------------------------------------------- postprocess


def test_top_detections_pick_the_best_query_class_pairs() -> None:
    logits = torch.full((1, 3, 2), -10.0)
    logits[0, 2, 1] = 3.0
    logits[0, 0, 0] = 1.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.5, 0.5, 1.0]]])
    out, scores, labels = top_detections(logits, boxes, torch.tensor([[100, 200]]), 2)
    assert labels.tolist() == [[1, 0]]
    torch.testing.assert_close(
        scores, torch.tensor([[math.exp(3) / (1 + math.exp(3)), math.exp(1) / (1 + math.exp(1))]])
    )
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 0.0, 100.0, 100.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([80.0, 30.0, 120.0, 70.0]))


def test_postprocess_scales_to_the_original_size() -> None:
    model = tiny_dino().eval()
    batch = _batch()
    batch["target"][1]["orig_size"] = (480, 800)
    with torch.no_grad():
        detections = model.postprocess(model(batch), batch)
    assert [d["boxes"].shape for d in detections] == [(10, 4), (10, 4)]
    assert detections[1]["boxes"][:, [0, 2]].max() <= 800 + 1e-3
    assert detections[1]["boxes"][:, [1, 3]].max() <= 480 + 1e-3
    assert (detections[0]["scores"][:-1] >= detections[0]["scores"][1:]).all()
