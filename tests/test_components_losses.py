"""cross_entropy against hand computation: hard labels, label smoothing, soft targets."""

from __future__ import annotations

import pytest
import torch

from visionforge import REGISTRIES
from visionforge.errors import ConfigError

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 2, 1])


def loss_fn(**spec: object) -> torch.nn.Module:
    return REGISTRIES.losses.build({"type": "cross_entropy", **spec}, "loss")


def log_softmax_by_hand(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.exp().sum(dim=1, keepdim=True).log()


def test_hard_labels() -> None:
    expected = -log_softmax_by_hand(LOGITS)[torch.arange(3), LABELS].mean()
    out = loss_fn()({"logits": LOGITS}, {"label": LABELS})
    assert set(out) == {"loss"}
    torch.testing.assert_close(out["loss"], expected)


def test_label_smoothing() -> None:
    eps, k = 0.1, LOGITS.shape[1]
    target = torch.full((3, k), eps / k)
    target[torch.arange(3), LABELS] += 1 - eps
    expected = -(target * log_softmax_by_hand(LOGITS)).sum(dim=1).mean()
    out = loss_fn(label_smoothing=eps)({"logits": LOGITS}, {"label": LABELS})
    torch.testing.assert_close(out["loss"], expected)


def test_soft_targets_are_used_as_given() -> None:
    target = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5], [0.2, 0.2, 0.6]])
    expected = -(target * log_softmax_by_hand(LOGITS)).sum(dim=1).mean()
    out = loss_fn(label_smoothing=0.3)({"logits": LOGITS}, {"label": target})
    torch.testing.assert_close(out["loss"], expected)


def test_gradient_flows_to_logits() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    loss_fn()({"logits": logits}, {"label": LABELS})["loss"].backward()
    assert logits.grad is not None
    expected = (torch.softmax(LOGITS, 1) - torch.eye(3)[LABELS]) / 3
    torch.testing.assert_close(logits.grad, expected)


def test_soft_targets_of_the_wrong_width_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"soft targets of shape \(3, 5\)"):
        loss_fn()({"logits": LOGITS}, {"label": torch.full((3, 5), 0.2)})
