"""DINO loads the official IDEA-Research/DINO layouts and, with the same weights, gives the
original's outputs query for query in float64.

``data/dino_golden.pt`` is written by ``tools/make_dino_golden.py`` from the original code
(its DINO-4scale configuration with 2+2 layers and 8 classes, random weights, float64).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import visionforge
from visionforge.errors import CheckpointError
from visionforge_dino.dino.model import DINO
from visionforge_dino.dino.weights import collapse_shared_heads, load_dino_weights, read_dino_state

DATA = Path(__file__).parent / "data"
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "checkpoint-keys"
ATOL = 1e-8


def _seeded(shape: tuple[int, ...], seed: int, mean: float, std: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return mean + torch.randn(shape, generator=generator, dtype=torch.float64) * std


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return torch.load(DATA / "dino_golden.pt", weights_only=True)


def _release_file(path: Path, state: dict[str, torch.Tensor]) -> str:
    """A file shaped like the official release: weights under ``model`` beside an argparse
    ``args`` namespace (which plain ``weights_only`` loading refuses)."""
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4, num_queries=900)}, path)
    return str(path)


@pytest.fixture(scope="module")
def loaded(golden: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> DINO:
    """The golden weights loaded into a float64 model (loading into float32 first would
    round them)."""
    state = {k: _seeded(*spec) for k, spec in golden["weights"].items()}
    path = _release_file(tmp_path_factory.mktemp("dino") / "checkpoint.pth", state)
    model = visionforge.models.build({"type": "dino_r50_4scale", **golden["config"]})
    assert isinstance(model, DINO)
    report = load_dino_weights(model.double(), path)
    assert report.complete, report.summary()
    assert len(report.loaded) == len(collapse_shared_heads(state, path))
    return model.eval()


@pytest.mark.slow
def test_outputs_equal_the_original_query_for_query(loaded: DINO, golden: dict[str, Any]) -> None:
    images = _seeded(golden["image_shape"], golden["image_seed"], 0.0, 1.0)
    with torch.no_grad():
        out = loaded({"image": images})
    interm = out["interm_outputs"]
    # the same encoder tokens selected, in the same order: the proposals are equal
    torch.testing.assert_close(
        interm["pred_boxes"], golden["interm_outputs"]["pred_boxes"], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(
        interm["pred_logits"], golden["interm_outputs"]["pred_logits"], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(out["pred_logits"], golden["pred_logits"], atol=ATOL, rtol=0)
    torch.testing.assert_close(out["pred_boxes"], golden["pred_boxes"], atol=ATOL, rtol=0)
    for ours, theirs in zip(out["aux_outputs"], golden["aux_outputs"], strict=True):
        torch.testing.assert_close(ours["pred_logits"], theirs["pred_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(ours["pred_boxes"], theirs["pred_boxes"], atol=ATOL, rtol=0)
    size = golden["image_shape"][2:]
    batch = {"image": images, "target": [{"orig_size": size}, {"orig_size": size}]}
    for ours, theirs in zip(loaded.postprocess(out, batch), golden["postprocess"], strict=True):
        assert torch.equal(ours["labels"], theirs["labels"])
        torch.testing.assert_close(ours["scores"], theirs["scores"], atol=ATOL, rtol=0)
        torch.testing.assert_close(ours["boxes"], theirs["boxes"], atol=1e-6, rtol=0)


def _official_layout(name: str) -> dict[str, list[int]]:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def _official_state(layout: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Random values in the official layout; copies of a shared head hold one tensor."""
    state: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    for index, (key, shape) in enumerate(layout.items()):
        parts = key.replace("transformer.decoder.", "").split(".")
        canonical = ".".join(p for i, p in enumerate(parts) if not (i == 1 and p.isdigit()))
        if parts[0] in ("class_embed", "bbox_embed"):
            state[key] = shared.setdefault(canonical, torch.randn(shape))
        else:
            state[key] = torch.randn(shape, generator=torch.Generator().manual_seed(index))
    return state


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_type", "layout"),
    [("dino_r50_4scale", "dino_4scale_r50"), ("dino_r50_5scale", "dino_5scale_r50")],
)
def test_every_official_key_is_loaded(model_type: str, layout: str, tmp_path: Path) -> None:
    state = _official_state(_official_layout(layout))
    path = _release_file(tmp_path / "release.pth", state)
    model = visionforge.models.build({"type": model_type, "weights": path})
    report = model.weights_report
    assert report.complete, report.summary()
    ours = model.state_dict()
    assert torch.equal(
        ours["class_embed.weight"], state["transformer.decoder.class_embed.3.weight"]
    )
    assert torch.equal(
        ours["backbone.body.layer4.2.conv3.weight"], state["backbone.0.body.layer4.2.conv3.weight"]
    )
    assert torch.equal(ours["label_enc.weight"], state["label_enc.weight"])


@pytest.mark.slow
def test_new_class_count_reinitializes_the_class_heads_and_keeps_the_rest(tmp_path: Path) -> None:
    state = _official_state(_official_layout("dino_4scale_r50"))
    path = _release_file(tmp_path / "release.pth", state)
    with pytest.warns(UserWarning, match="re-initialized"):
        model = visionforge.models.build(
            {"type": "dino_r50_4scale", "num_classes": 3, "weights": path}
        )
    report = model.weights_report
    assert sorted(report.reinitialized) == sorted(
        [
            "class_embed.weight",
            "class_embed.bias",
            "transformer.enc_out_class_embed.weight",
            "transformer.enc_out_class_embed.bias",
            "label_enc.weight",
        ]
    )
    ours = model.state_dict()
    assert ours["class_embed.weight"].shape == (3, 256)
    assert ours["label_enc.weight"].shape == (4, 256)
    assert torch.equal(ours["transformer.tgt_embed.weight"], state["transformer.tgt_embed.weight"])


def test_shared_head_copies_that_differ_are_refused(tmp_path: Path) -> None:
    layout = _official_layout("dino_4scale_r50")
    state = _official_state(layout)
    state["class_embed.2.bias"] = state["class_embed.2.bias"] + 1
    path = _release_file(tmp_path / "release.pth", state)
    with pytest.raises(CheckpointError, match=r"class_embed\.2\.bias differs"):
        read_dino_state(path)
