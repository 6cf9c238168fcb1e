"""Write the DINO parity fixture (``tests/data/dino_golden.pt``) from the ORIGINAL code.

    python plugins/visionforge-dino/tools/make_dino_golden.py /path/to/IDEA-Research-DINO

builds IDEA-Research/DINO's own model and PostProcess from a checkout given on the command
line (never copied into this repository) with its DINO-4scale configuration shortened to
2 encoder and 2 decoder layers of FFN width 256 and 8 classes (the width of 256 and the 8
heads stay: the original hard-codes them), its CUDA op replaced by its own pure-PyTorch
core, random weights, in float64, in eval mode, on two unpadded 256x320 images (1,700
encoder tokens for 900 queries), and saves:

- ``config``: the sizes, for building the same model with ``dino_r50_4scale``'s fields;
- ``weights``: the state_dict in the official key layout as ``{key: (shape, seed, mean,
  std)}``, each tensor being ``mean + std * randn(shape, Generator().manual_seed(seed),
  float64)`` (copies of a shared head share one seed), so the fixture stays small;
- ``image_shape``/``image_seed`` and the original's outputs: ``pred_logits``,
  ``pred_boxes``, ``aux_outputs``, ``interm_outputs``, the selected encoder proposals'
  indices and PostProcess results.

The original computes position encodings, proposal grids and reference points in float32
whatever the model's dtype; this script runs those modules with float32 read as float64
(the formulas are untouched), so the reference is float64 throughout.
"""

from __future__ import annotations

import argparse
import math
import runpy
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torchvision
from make_detr_golden import _Float64Torch, seeded  # the same seeding rule and dtype shim

SIZES: dict[str, Any] = {
    "enc_layers": 2,
    "dec_layers": 2,
    "dim_feedforward": 256,
    "num_classes": 8,
    "dn_labelbook_size": 8,
}
IMAGE_SHAPE = (2, 3, 256, 320)
IMAGE_SEED = 4321


def _canonical(key: str) -> str:
    """The one name of a shared head's copies (``class_embed.3.x`` -> ``class_embed.x``)."""
    for head in ("class_embed", "bbox_embed"):
        for prefix in ("", "transformer.decoder."):
            start = f"{prefix}{head}."
            if key.startswith(start) and key[len(start)].isdigit():
                rest = key[len(start) :].split(".", 1)[1]
                return f"{head}.{rest}"
    return key


def _randomize(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], int, float, float]]:
    """Random weights of order-1 activations, ``mean + std * seeded(shape, seed)`` per key."""
    recipe: dict[str, tuple[tuple[int, ...], int, float, float]] = {}
    seeds: dict[str, int] = {}
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            shape = tuple(tensor.shape)
            seed = seeds.setdefault(_canonical(key), 2000 + len(seeds))
            if key.endswith(("running_mean", "bias")):
                mean, std = 0.0, 0.1
            elif len(shape) == 1:  # norm weights, frozen-BN running_var
                mean, std = 1.0, 0.1
            elif key.endswith(("level_embed", "tgt_embed.weight", "label_enc.weight")):
                mean, std = 0.0, 1.0
            else:
                mean, std = 0.0, 1 / math.sqrt(math.prod(shape[1:]))
            recipe[key] = (shape, seed, mean, std)
            tensor.copy_(mean + seeded(shape, seed, std))
    return recipe


def _config(dino_root: Path) -> argparse.Namespace:
    values: dict[str, Any] = {}
    for name in ("coco_transformer.py", "DINO_4scale.py"):
        values.update(
            {
                k: v
                for k, v in runpy.run_path(str(dino_root / "config" / "DINO" / name)).items()
                if not k.startswith("_")
            }
        )
    values.update(SIZES, device="cpu", masks=False, frozen_weights=None, dataset_file="coco")
    return argparse.Namespace(**values)


def build_original(dino_root: Path) -> tuple[Any, Any]:
    sys.path.insert(0, str(dino_root))
    sys.modules["MultiScaleDeformableAttention"] = types.ModuleType("MultiScaleDeformableAttention")
    from models.dino import (  # type: ignore[import-not-found]
        deformable_transformer,
        position_encoding,
        utils,
    )
    from models.dino.dino import build_dino  # type: ignore[import-not-found]
    from models.dino.ops.functions import ms_deform_attn_func  # type: ignore[import-not-found]

    for module in (position_encoding, utils, deformable_transformer):
        module.torch = _Float64Torch()  # type: ignore[attr-defined]

    def pytorch_core(value, shapes, _starts, locations, weights, _step):  # type: ignore[no-untyped-def]
        return ms_deform_attn_func.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    ms_deform_attn_func.MSDeformAttnFunction.apply = staticmethod(pytorch_core)
    resnet50 = torchvision.models.resnet50

    def untrained_resnet50(*args: Any, pretrained: bool = False, **kwargs: Any) -> Any:
        return resnet50(*args, weights=None, **kwargs)  # no download

    torchvision.models.resnet50 = untrained_resnet50
    model, _criterion, postprocessors = build_dino(_config(dino_root))
    return model, postprocessors["bbox"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dino_root", type=Path, help="checkout of IDEA-Research/DINO")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "data" / "dino_golden.pt",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model, postprocess = build_original(args.dino_root)
    model.double().eval()
    recipe = _randomize(model)
    images = seeded(IMAGE_SHAPE, IMAGE_SEED, 1.0)
    captured: dict[str, torch.Tensor] = {}
    original_topk = torch.topk

    def recording_topk(input: torch.Tensor, k: int, *rest: Any, **kwargs: Any) -> Any:
        result = original_topk(input, k, *rest, **kwargs)
        captured.setdefault("selected", result[1])  # the first top-k is the query selection
        return result

    torch.topk = recording_topk  # type: ignore[assignment]
    try:
        with torch.no_grad():
            out = model(list(images))
    finally:
        torch.topk = original_topk  # type: ignore[assignment]
    sizes = torch.tensor([IMAGE_SHAPE[2:]] * IMAGE_SHAPE[0])
    with torch.no_grad():
        results = postprocess(out, sizes)
    golden = {
        "config": dict(SIZES),
        "weights": recipe,
        "image_shape": IMAGE_SHAPE,
        "image_seed": IMAGE_SEED,
        "pred_logits": out["pred_logits"],
        "pred_boxes": out["pred_boxes"],
        "aux_outputs": out["aux_outputs"],
        "interm_outputs": out["interm_outputs"],
        "selected_queries": captured["selected"],
        "postprocess": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(golden, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(recipe)} tensors)")


if __name__ == "__main__":
    main()
