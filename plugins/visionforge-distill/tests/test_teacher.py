"""Teachers from a local transformers folder or timm, their heads, and the teacher cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import visionforge
from visionforge.errors import ConfigError
from visionforge.interfaces import FrozenModule
from visionforge_distill.configs import ClassFoldersConfig
from visionforge_distill.data import ClassFolders

NUM_CARDS = 8
IMAGE_SIZE = 32


def build(block: dict) -> torch.nn.Module:
    teacher = visionforge.models.build(block, "teacher")
    teacher.eval().requires_grad_(False)
    return teacher


def test_dinov2_from_a_local_folder_pools_cls_or_patches(
    dinov2_dir: Path, teacher_block: Any
) -> None:
    from transformers import AutoModel

    reference = AutoModel.from_pretrained(dinov2_dir, local_files_only=True).eval()
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    hidden = reference(pixel_values=images).last_hidden_state
    cls = build(teacher_block())
    mean = build(teacher_block(pooling="mean_patch"))
    assert isinstance(cls, FrozenModule)
    with torch.no_grad():
        out = cls({"image": images})
        torch.testing.assert_close(out["embedding"], hidden[:, 0])
        torch.testing.assert_close(mean({"image": images})["embedding"], hidden[:, 1:].mean(1))
    assert out["logits"].shape == (2, NUM_CARDS)
    identity = cls.identity()
    assert identity["name"] == "hf:dinov2" and len(identity["sha256"]) == 64
    assert identity["path"] == str(dinov2_dir)


def test_prototype_logits_recognise_the_clean_training_images(
    cards_dir: Path, teacher_block: Any
) -> None:
    teacher = build(teacher_block())
    gallery = ClassFolders(
        ClassFoldersConfig(root=str(cards_dir), role="retrieval", image_size=IMAGE_SIZE)
    )
    images = torch.stack([gallery[i]["image"] for i in range(NUM_CARDS)])
    with torch.no_grad():
        logits = teacher({"image": images})["logits"]
    # each clean image is its class's only image: its prototype, cosine 1 -> logit = scale
    assert torch.equal(logits.argmax(1), torch.arange(NUM_CARDS))
    torch.testing.assert_close(logits.diagonal(), torch.full((NUM_CARDS,), 10.0))


def test_timm_teacher_and_linear_head(tmp_path: Path) -> None:
    head = tmp_path / "head.pt"
    torch.save({"weight": torch.randn(3, 64), "bias": torch.zeros(3)}, head)
    teacher = build(
        {"type": "timm_teacher", "name": "test_vit", "head": {"type": "linear", "path": str(head)}}
    )
    with torch.no_grad():
        out = teacher({"image": torch.randn(2, 3, 160, 160)})
    assert out["embedding"].shape == (2, 64) and out["logits"].shape == (2, 3)
    torch.save({"weight": torch.randn(3, 5)}, head)
    with pytest.raises(Exception, match=r"expected \{'weight': \[C, 64\]"):
        build(
            {
                "type": "timm_teacher",
                "name": "test_vit",
                "head": {"type": "linear", "path": str(head)},
            }
        )


def test_cached_embeddings_equal_on_the_fly_and_stale_views_are_refused(
    teacher_block: Any, tmp_path: Path
) -> None:
    plain = build(teacher_block())
    cache = {"dir": str(tmp_path / "cache"), "views": 3}
    cached = build(teacher_block(cache=cache))
    images = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    batch = {
        "image": images,
        "index": torch.tensor([0, 1, 2, 3]),
        "view": torch.tensor([0, 2, 1, 0]),
    }
    with torch.no_grad():
        want = plain(batch)
        first = cached(batch)  # all misses: computed and stored
        again = build(teacher_block(cache=cache))(batch)  # all hits
    assert cached.cache.misses == 4 and cached.cache.hits == 0
    for out in (first, again):
        torch.testing.assert_close(out["embedding"], want["embedding"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    stale = {**batch, "image": images.flip(-1)}
    with pytest.raises(ConfigError, match="renders differently"), torch.no_grad():
        cached(stale)
    with pytest.raises(ConfigError, match="not fixed views"), torch.no_grad():
        cached({**batch, "view": torch.tensor([0, 0, 0, 3])})


def test_a_cache_of_another_teacher_is_refused(teacher_block: Any, tmp_path: Path) -> None:
    cache = {"dir": str(tmp_path / "cache"), "views": 2}
    build(teacher_block(cache=cache))
    with pytest.raises(ConfigError, match="another teacher"):
        build(teacher_block(cache=cache, pooling="mean_patch"))


def test_teacher_folder_that_is_not_a_model_is_a_clear_error(
    tmp_path: Path, teacher_block: Any
) -> None:
    with pytest.raises(ConfigError, match="teacher.path: cannot load"):
        build(teacher_block(path=str(tmp_path)))
