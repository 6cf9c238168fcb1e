"""DINO training step (forward + loss + backward): visionforge's ``dino_r50_4scale`` vs
transformers' ``DeformableDetrForObjectDetection`` (two-stage, box refinement, 900 queries)
on the same batch.

All: ResNet-50 with frozen batch norm, random weights (transformers:
``use_pretrained_backbone=False``), 4 feature levels, 256-wide 6+6 deformable transformer, 8
heads, 4 points, 900 queries, 91 classes, focal loss, auxiliary and encoder losses, train
mode, no dropout. Two baselines: ``transformers`` is the issue's configuration
(``DeformableDetrConfig(two_stage=True, with_box_refine=True, num_queries=900,
two_stage_num_proposals=900)``), whose FFNs are 1024 wide (Deformable DETR's size), half of
DINO's 2048; ``transformers-ffn2048`` sets both FFNs to 2048, the same sizes as ours. Ours
also trains its 100 denoising queries (DINO's CDN): it does more work per step than either
baseline, which have no denoising. Steps alternate between the models; the table gives the
median step time with min-max, and the ratio of medians. Peak memory is measured in a fresh
subprocess per model (peak RSS growth over one step on CPU, with glibc returning freed
allocations of 128 KB or more to the OS; ``max_memory_allocated`` on CUDA). ``--profile``
prints where each model's time goes.

    python benchmarks/dino_train_step.py                        # CPU, 2 x 512x640
    python benchmarks/dino_train_step.py --height 320 --width 400 --steps 3
    python benchmarks/dino_train_step.py --only visionforge transformers --profile
    python benchmarks/dino_train_step.py --device cuda --dtype bfloat16 --height 800 --width 1066
"""

from __future__ import annotations

from typing import Any

import torch
from train_step_harness import NUM_CLASSES, Step, main, transformers_step, visionforge_step


def ours(device: torch.device) -> tuple[torch.nn.Module, Step]:
    return visionforge_step("dino_r50_4scale", "dino", device)


def theirs(device: torch.device, ffn: int | None = None) -> tuple[torch.nn.Module, Step]:
    """The issue's baseline config; ``ffn`` sets both FFN widths (default config: 1024)."""
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

    sizes: dict[str, Any] = {
        "num_labels": NUM_CLASSES,
        "two_stage": True,
        "with_box_refine": True,
        "num_queries": 900,
        "two_stage_num_proposals": 900,
        "backbone": "resnet50",  # timm, frozen batch norm
        "use_pretrained_backbone": False,  # random weights, no download
        "dropout": 0.0,
    }
    if ffn is not None:
        sizes |= {"encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn}
    config = DeformableDetrConfig(**sizes)
    model: torch.nn.Module = DeformableDetrForObjectDetection(config)
    model.to(device)
    return model, transformers_step(model, device)


def theirs_same_ffn(device: torch.device) -> tuple[torch.nn.Module, Step]:
    return theirs(device, ffn=2048)


if __name__ == "__main__":
    main(
        "DINO-4scale R50",
        __file__,
        {"visionforge": ours, "transformers": theirs, "transformers-ffn2048": theirs_same_ffn},
        __doc__ or "",
    )
