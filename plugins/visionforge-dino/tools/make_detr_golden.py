"""Write the DETR parity fixture (``tests/data/detr_golden.pt``) from the ORIGINAL code.

    python plugins/visionforge-dino/tools/make_detr_golden.py /path/to/facebookresearch-detr

builds facebookresearch/detr's own DETR, HungarianMatcher, SetCriterion and PostProcess
from a checkout given on the command line (never copied into this repository), with random
weights, in float64, at a tiny size (ResNet-18 trunk, 32-wide 2+2 transformer, 10 queries,
5 classes, 2 images of 48x64 with one of them padded), and saves:

- ``config``: the sizes, for building the same model with ``detr_r50``'s config fields;
- ``weights``: the state_dict in the official key layout (key order kept) as
  ``{key: (shape, seed, mean, std)}``, each tensor being ``mean + std * torch.randn(shape,
  generator=Generator().manual_seed(seed), dtype=float64)``, so the fixture stays a few
  tens of KB (the images likewise, from ``image_seed``, zero where ``mask`` is True);
- ``mask``, ``targets`` (xyxy pixels + labels), and the original's outputs: ``pred_logits``,
  ``pred_boxes``, ``aux_outputs``, the criterion's weighted losses and PostProcess results.

The original computes its sine position encoding in float32 whatever the model's dtype;
for a float64 reference this script runs that one module with float32 read as float64 (the
formula is untouched), and re-sets the criterion's no-object weight (a buffer it builds in
float32) to 0.1 after ``.double()``.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path
from typing import Any

import torch

SIZES: dict[str, Any] = {
    "backbone": "resnet18",
    "hidden_dim": 32,
    "nheads": 4,
    "enc_layers": 2,
    "dec_layers": 2,
    "dim_feedforward": 64,
    "num_queries": 10,
    "num_classes": 5,
    "dropout": 0.1,
}
IMAGE_SHAPE = (2, 3, 48, 64)
IMAGE_SEED = 1234


def seeded(shape: tuple[int, ...], seed: int, std: float) -> torch.Tensor:
    """The regeneration rule the tests use for ``seeded`` entries."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


class _Float64Torch(types.ModuleType):
    """``torch`` as seen by the original position encoding: ``float32`` means float64."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return torch.float64 if name == "float32" else getattr(torch, name)


def _randomize(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], int, float, float]]:
    """Random weights and frozen-BN statistics that keep activations of order 1, each
    ``mean + std * seeded(shape, seed)``; returns ``{key: (shape, seed, mean, std)}``."""
    recipe: dict[str, tuple[tuple[int, ...], int, float, float]] = {}
    with torch.no_grad():
        for index, (key, tensor) in enumerate(model.state_dict().items()):
            shape = tuple(tensor.shape)
            if key.endswith(("running_mean", "bias")):
                mean, std = 0.0, 0.1
            elif len(shape) == 1:  # norm / frozen-BN weights and running_var
                mean, std = 1.0, 0.1
            else:
                mean, std = 0.0, 1 / math.sqrt(math.prod(shape[1:]))
            recipe[key] = (shape, 1000 + index, mean, std)
            tensor.copy_(mean + seeded(shape, 1000 + index, std))
    return recipe


def build_original(detr_root: Path) -> tuple[Any, Any, Any, Any]:
    sys.path.insert(0, str(detr_root))
    from models import backbone as original_backbone
    from models import position_encoding
    from models.detr import DETR, PostProcess, SetCriterion
    from models.matcher import HungarianMatcher
    from models.transformer import Transformer

    position_encoding.torch = _Float64Torch()
    original_backbone.is_main_process = lambda: False  # pretrained=False: no download
    trunk = original_backbone.Backbone(
        SIZES["backbone"], train_backbone=True, return_interm_layers=False, dilation=False
    )
    position = position_encoding.PositionEmbeddingSine(SIZES["hidden_dim"] // 2, normalize=True)
    joiner = original_backbone.Joiner(trunk, position)
    joiner.num_channels = trunk.num_channels
    transformer = Transformer(
        d_model=SIZES["hidden_dim"],
        nhead=SIZES["nheads"],
        num_encoder_layers=SIZES["enc_layers"],
        num_decoder_layers=SIZES["dec_layers"],
        dim_feedforward=SIZES["dim_feedforward"],
        dropout=SIZES["dropout"],
        normalize_before=False,
        return_intermediate_dec=True,
    )
    model = DETR(
        joiner,
        transformer,
        num_classes=SIZES["num_classes"],
        num_queries=SIZES["num_queries"],
        aux_loss=True,
    )
    weight_dict = {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}
    for i in range(SIZES["dec_layers"] - 1):
        weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
    matcher = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2)
    criterion = SetCriterion(
        SIZES["num_classes"],
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=0.1,
        losses=["labels", "boxes", "cardinality"],
    )
    return model, criterion, PostProcess(), weight_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detr_root", type=Path, help="checkout of facebookresearch/detr")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "data" / "detr_golden.pt",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model, criterion, postprocess, weight_dict = build_original(args.detr_root)
    from util.misc import NestedTensor

    model.double().eval()
    criterion.double()
    criterion.empty_weight[-1] = 0.1  # its buffer was built in float32 (0.1 + 1.5e-9)
    recipe = _randomize(model)
    images = seeded(IMAGE_SHAPE, IMAGE_SEED, 1.0)
    mask = torch.zeros(IMAGE_SHAPE[0], *IMAGE_SHAPE[2:], dtype=torch.bool)
    mask[1, 40:, :] = True  # second image: 40x52 valid, padded at the bottom and right
    mask[1, :, 52:] = True
    images[1][:, mask[1]] = 0
    with torch.no_grad():
        out = model(NestedTensor(images, mask))
    # targets in pixels of each image's valid area (xyxy), as a detection batch holds them
    targets_xyxy = [
        torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 2.0, 60.0, 22.0], [40.0, 30.0, 62.0, 47.0]]),
        torch.tensor([[1.0, 1.0, 25.0, 39.0]]),
    ]
    labels = [torch.tensor([0, 3, 4]), torch.tensor([2])]
    sizes = [(48, 64), (40, 52)]
    normalized = []
    for boxes, lab, (h, w) in zip(targets_xyxy, labels, sizes, strict=True):
        b = boxes.double() / torch.tensor([w, h, w, h], dtype=torch.float64)
        cxcywh = torch.stack(
            [
                (b[:, 0] + b[:, 2]) / 2,
                (b[:, 1] + b[:, 3]) / 2,
                b[:, 2] - b[:, 0],
                b[:, 3] - b[:, 1],
            ],
            1,
        )
        normalized.append({"boxes": cxcywh, "labels": lab})
    with torch.no_grad():
        raw = criterion(out, normalized)
        losses = {k: raw[k] * weight_dict[k] for k in weight_dict}
        results = postprocess(out, torch.tensor(sizes))
    state = model.state_dict()
    golden = {
        "config": dict(SIZES),
        "weights": recipe,
        "image_shape": IMAGE_SHAPE,
        "image_seed": IMAGE_SEED,
        "mask": mask,
        "targets": [
            {"boxes": b.double(), "labels": lab, "size": s}
            for b, lab, s in zip(targets_xyxy, labels, sizes, strict=True)
        ],
        "pred_logits": out["pred_logits"],
        "pred_boxes": out["pred_boxes"],
        "aux_outputs": out["aux_outputs"],
        "weighted_losses": losses,
        "class_error": raw["class_error"],
        "postprocess": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(state)} tensors)")


if __name__ == "__main__":
    main()
