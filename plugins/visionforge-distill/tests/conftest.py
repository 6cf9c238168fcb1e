"""Shared fixtures: a tiny random DINOv2 saved to a folder, and generated card images."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from visionforge_distill.cards import make_cards

NUM_CARDS = 8  # also in the test modules: conftest is not importable under importlib mode
IMAGE_SIZE = 32


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: tiny models on a shared machine run faster that way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Dinov2 (hidden 32, 2 layers, patch 8) saved with save_pretrained."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        image_size=IMAGE_SIZE,
    )
    folder = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def cards_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NUM_CARDS classes, one card image each."""
    return make_cards(tmp_path_factory.mktemp("cards"), NUM_CARDS, width=24)


TeacherBlock = Callable[..., dict[str, Any]]


@pytest.fixture
def teacher_block(dinov2_dir: Path, cards_dir: Path) -> TeacherBlock:
    """``teacher_block(**fields)``: the tiny DINOv2 teacher's recipe block."""
    return functools.partial(_teacher_block, dinov2_dir, cards_dir)


@pytest.fixture
def distill_recipe(dinov2_dir: Path, cards_dir: Path) -> Callable[..., dict[str, Any]]:
    """``distill_recipe(output, **overrides)``: a tiny teacher -> student recipe dict."""
    return functools.partial(_distill_recipe, dinov2_dir=dinov2_dir, cards_dir=cards_dir)


def _teacher_block(dinov2_dir: Path, cards_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "type": "hf_teacher",
        "path": str(dinov2_dir),
        "head": {"prototypes_from": str(cards_dir)},
        "image_size": IMAGE_SIZE,
        **extra,
    }


def _distill_recipe(
    output: Path, *, dinov2_dir: Path, cards_dir: Path, **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "distill-test",
        "teacher": _teacher_block(dinov2_dir, cards_dir, **overrides.pop("teacher", {})),
        "model": {
            "type": "distill_student",
            "backbone": "test_efficientnet",
            "embedding_dim": 32,
            "num_classes": NUM_CARDS,
        },
        "data": {
            "train": {
                "type": "class_folders",
                "root": str(cards_dir),
                "image_size": IMAGE_SIZE,
                **overrides.pop("train", {}),
            },
            "val": {
                "type": "class_folders",
                "root": str(cards_dir),
                "role": "retrieval",
                "image_size": IMAGE_SIZE,
            },
        },
        "loss": {"type": "distillation"},
        "evaluator": {"type": "retrieval", "backend": "torch"},
        "optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.01},
        "trainer": {
            "epochs": 2,
            "batch_size": 4,
            "device": "cpu",
            "loggers": ["csv"],
            "output": str(output),
            **overrides.pop("trainer", {}),
        },
    }
    data.update(overrides)
    return data
