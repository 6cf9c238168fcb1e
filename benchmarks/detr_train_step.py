"""DETR training step (forward + loss + backward): visionforge's ``detr_r50`` vs
transformers' ``DetrForObjectDetection`` with the same sizes on the same batch.

Both: ResNet-50 with frozen batch norm, random weights (transformers:
``use_pretrained_backbone=False``), 256-wide 6+6 transformer, 8 heads, FFN 2048, 100 queries,
91 classes, auxiliary losses, Hungarian matching with costs 1/5/2 and losses 1/5/2, train
mode with dropout 0.1, padded batch with its mask. Steps alternate between the two models;
the table gives the median step time with min-max, and the ratio of medians. Peak memory is
measured in a fresh subprocess per model (peak RSS growth over one step on CPU, with glibc
returning freed allocations of 128 KB or more to the OS, ``max_memory_allocated`` on CUDA).
``--profile`` prints where each model's time goes.

    python benchmarks/detr_train_step.py                        # CPU, 2 x 512x640
    python benchmarks/detr_train_step.py --height 320 --width 400 --steps 3
    python benchmarks/detr_train_step.py --device cuda --steps 20
    python benchmarks/detr_train_step.py --profile --steps 1     # where the time goes
"""

from __future__ import annotations

from typing import Any

import torch
from train_step_harness import NUM_CLASSES, Step, main, transformers_step, visionforge_step


def ours(device: torch.device) -> tuple[torch.nn.Module, Step]:
    return visionforge_step("detr_r50", "detr", device)


def theirs(device: torch.device) -> tuple[torch.nn.Module, Step]:
    from transformers import DetrConfig, DetrForObjectDetection

    sizes: dict[str, Any] = {
        "num_labels": NUM_CLASSES,
        "num_queries": 100,
        "d_model": 256,
        "encoder_layers": 6,
        "decoder_layers": 6,
        "encoder_ffn_dim": 2048,
        "decoder_ffn_dim": 2048,
        "encoder_attention_heads": 8,
        "decoder_attention_heads": 8,
        "dropout": 0.1,
        "auxiliary_loss": True,
        "class_cost": 1,
        "bbox_cost": 5,
        "giou_cost": 2,
        "bbox_loss_coefficient": 5,
        "giou_loss_coefficient": 2,
        "eos_coefficient": 0.1,
        "backbone": "resnet50",  # timm, frozen batch norm
        "use_pretrained_backbone": False,  # random weights, no download
    }
    model: torch.nn.Module = DetrForObjectDetection(DetrConfig(**sizes))
    model.to(device)
    return model, transformers_step(model, device)


if __name__ == "__main__":
    main("DETR-R50", __file__, {"visionforge": ours, "transformers": theirs}, __doc__ or "")
