"""The distillation loss equals its formula, term by term, and never reaches the teacher."""

from __future__ import annotations

import math

import pytest
import torch

import visionforge
from visionforge.errors import ConfigError


def fixed_outputs() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)

    def fixed(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    student = {"embedding": fixed(3, 5), "logits": fixed(3, 4)}
    teacher = {"embedding": fixed(3, 5), "logits": fixed(3, 4)}
    return student, teacher


def by_hand(
    student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], t: float = 4.0
) -> tuple[float, float]:
    """(mean squared embedding error, T^2 x KL(teacher_soft || student_soft) / batch)."""
    s_emb, t_emb = student["embedding"].tolist(), teacher["embedding"].tolist()
    squares = [
        (a - b) ** 2
        for row_s, row_t in zip(s_emb, t_emb, strict=True)
        for a, b in zip(row_s, row_t, strict=True)
    ]
    mse = sum(squares) / len(squares)
    kl = 0.0
    for s_row, t_row in zip(student["logits"].tolist(), teacher["logits"].tolist(), strict=True):
        s_z = sum(math.exp(v / t) for v in s_row)
        t_z = sum(math.exp(v / t) for v in t_row)
        for s_v, t_v in zip(s_row, t_row, strict=True):
            p, q = math.exp(t_v / t) / t_z, math.exp(s_v / t) / s_z
            kl += p * (math.log(p) - math.log(q))
    return mse, t * t * kl / len(s_emb)


def test_default_loss_is_the_formula_and_reports_each_term() -> None:
    loss = visionforge.losses.build({"type": "distillation"})
    student, teacher = fixed_outputs()
    out = loss({**student, "teacher": teacher}, {"label": torch.tensor([0, 1, 2])})
    mse, soft = by_hand(student, teacher)
    assert set(out) == {"loss", "embedding", "kl"}
    assert out["embedding"].item() == pytest.approx(mse, rel=1e-12)
    assert out["kl"].item() == pytest.approx(soft, rel=1e-12)
    assert out["loss"].item() == pytest.approx(0.7 * mse + 0.3 * soft, rel=1e-12)


def test_no_gradient_reaches_the_teacher_outputs() -> None:
    loss = visionforge.losses.build({"type": "distillation", "ce_weight": 0.5})
    student, teacher = fixed_outputs()
    out = loss({**student, "teacher": teacher}, {"label": torch.tensor([0, 1, 2])})
    out["loss"].backward()
    assert student["embedding"].grad is not None and student["logits"].grad is not None
    assert teacher["embedding"].grad is None and teacher["logits"].grad is None


def test_cosine_embedding_loss_and_hard_label_term() -> None:
    loss = visionforge.losses.build(
        {"type": "distillation", "embedding_loss": "cosine", "alpha": 0.4, "ce_weight": 0.2}
    )
    student, teacher = fixed_outputs()
    labels = torch.tensor([3, 0, 1])
    out = loss({**student, "teacher": teacher}, {"label": labels})
    s, t = student["embedding"].tolist(), teacher["embedding"].tolist()
    cosines = [
        sum(a * b for a, b in zip(u, v, strict=True))
        / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
        for u, v in zip(s, t, strict=True)
    ]
    embedding = sum(1 - c for c in cosines) / 3
    ce = (
        sum(
            -row[y] + math.log(sum(math.exp(v) for v in row))
            for row, y in zip(student["logits"].tolist(), labels.tolist(), strict=True)
        )
        / 3
    )
    _, soft = by_hand(student, teacher)
    assert out["embedding"].item() == pytest.approx(embedding, rel=1e-12)
    assert out["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert out["loss"].item() == pytest.approx(0.4 * embedding + 0.6 * soft + 0.2 * ce, rel=1e-12)


def test_missing_teacher_and_mismatched_sizes_are_clear_errors() -> None:
    loss = visionforge.losses.build({"type": "distillation"})
    student, teacher = fixed_outputs()
    with pytest.raises(ConfigError, match="add a teacher: block"):
        loss(student, {})
    small = {**teacher, "embedding": teacher["embedding"][:, :3]}
    with pytest.raises(ConfigError, match="embedding_dim"):
        loss({**student, "teacher": small}, {})
