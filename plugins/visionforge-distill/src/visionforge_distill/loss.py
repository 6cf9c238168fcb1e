"""The distillation loss: embedding matching plus softened-logit KL (Hinton et al.)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from visionforge.errors import ConfigError
from visionforge_distill.configs import DistillationLossConfig


class DistillationLoss:
    """``alpha * emb + (1 - alpha) * T^2 * KL(teacher_soft || student_soft)`` (+ CE).

    ``outputs`` holds the student's ``embedding`` and ``logits`` and the teacher's under
    ``outputs["teacher"]``; KL uses ``batchmean``. Teacher outputs are detached, so no
    gradient reaches them. Every term is returned for logging.
    """

    def __init__(self, cfg: DistillationLossConfig) -> None:
        self.cfg = cfg

    def __call__(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        teacher = outputs.get("teacher")
        if teacher is None:
            raise ConfigError(
                "loss: distillation needs the teacher's outputs; add a teacher: block to the "
                "recipe (e.g. type: hf_teacher)"
            )
        cfg = self.cfg
        student_emb = _at_least_fp32(outputs["embedding"])
        teacher_emb = _at_least_fp32(teacher["embedding"].detach())
        if student_emb.shape != teacher_emb.shape:
            raise ConfigError(
                f"model.embedding_dim: student embeddings {tuple(student_emb.shape)} vs teacher "
                f"{tuple(teacher_emb.shape)}; set embedding_dim to the teacher's size"
            )
        student_logits = _at_least_fp32(outputs["logits"])
        teacher_logits = _at_least_fp32(teacher["logits"].detach())
        if student_logits.shape != teacher_logits.shape:
            raise ConfigError(
                f"model.num_classes: student logits {tuple(student_logits.shape)} vs teacher "
                f"{tuple(teacher_logits.shape)}; both must cover the same classes"
            )
        if cfg.embedding_loss == "mse":
            embedding = F.mse_loss(student_emb, teacher_emb)
        else:
            embedding = (1 - F.cosine_similarity(student_emb, teacher_emb, dim=-1)).mean()
        t = cfg.temperature
        kl = F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        soft = kl * (t * t)
        total = cfg.alpha * embedding + (1 - cfg.alpha) * soft
        losses = {"embedding": embedding.detach(), "kl": soft.detach()}
        if cfg.ce_weight > 0:
            ce = F.cross_entropy(student_logits, batch["label"])
            total = total + cfg.ce_weight * ce
            losses["ce"] = ce.detach()
        return {"loss": total, **losses}


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it is (AMP outputs come in fp16/bf16)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def build_distillation(cfg: DistillationLossConfig) -> DistillationLoss:
    """Registry builder of the ``distillation`` loss."""
    return DistillationLoss(cfg)
