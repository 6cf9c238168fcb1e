"""``visionforge distill make-cards|build-index|query`` from a checkpoint and from ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from visionforge import lineage
from visionforge.cli import main
from visionforge.components.configs import OnnxExporterConfig
from visionforge.config import recipe_from_dict
from visionforge.engine import Trainer
from visionforge.export.onnx import build_onnx
from visionforge_distill.index import CosineIndex
from visionforge_distill.reference import build_reference


@pytest.fixture(scope="module")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A student trained for one step on generated cards (no teacher needed for the index)."""
    root = tmp_path_factory.mktemp("cli")
    cards = root / "cards"
    assert main(["distill", "make-cards", str(cards), "--classes", "6", "--width", "24"]) == 0
    recipe = recipe_from_dict(
        {
            "name": "student",
            "model": {
                "type": "distill_student",
                "backbone": "test_efficientnet",
                "embedding_dim": 16,
                "num_classes": 6,
            },
            "data": {"train": {"type": "class_folders", "root": str(cards), "image_size": 32}},
            "loss": {"type": "cross_entropy"},
            "trainer": {
                "epochs": 1,
                "batch_size": 6,
                "device": "cpu",
                "loggers": [],
                "output": str(root / "run"),
            },
        }
    )
    Trainer(recipe).fit()
    return root / "run" / "last.ckpt", cards


def test_build_index_and_query_from_a_checkpoint(
    student_checkpoint: tuple[Path, Path], tmp_path: Path, capsys: Any
) -> None:
    ckpt, cards = student_checkpoint
    out = tmp_path / "reference"
    assert main(["distill", "build-index", str(ckpt), str(cards), "--out", str(out)]) == 0
    manifest = lineage.read_manifest(str(out))
    assert manifest["kind"] == "reference_index" and manifest["count"] == 6
    assert manifest["parents"][0]["path"] == str(ckpt)
    assert manifest["parents"][0]["id"] is not None  # the checkpoint's manifest id
    embeddings = np.load(out / "embeddings.npy")
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert (out / manifest["index_file"]).exists() if manifest["index_file"] else True

    image = cards / "card_00003" / "variant_0.png"
    capsys.readouterr()
    assert main(["distill", "query", str(out), str(image), "-k", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["matches"][0]["class"] == "card_00003"  # a gallery image finds itself
    assert row["matches"][0]["score"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # the dynamo ONNX export takes most of a minute here
def test_onnx_embeddings_build_the_same_index(
    student_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    from visionforge.engine import load_model

    ckpt, cards = student_checkpoint
    model, recipe = load_model(str(ckpt))
    onnx_path = tmp_path / "student.onnx"
    build_onnx(OnnxExporterConfig()).export(
        model,
        out=str(onnx_path),
        recipe=recipe,
        parents=[str(ckpt)],
        example=torch.randn(2, 3, 32, 32),
    )
    from_ckpt = build_reference(str(ckpt), str(cards), str(tmp_path / "a"), backend="torch")
    from_onnx = build_reference(str(onnx_path), str(cards), str(tmp_path / "b"), backend="torch")
    assert from_onnx["dim"] == from_ckpt["dim"] == 16
    a = np.load(tmp_path / "a" / "embeddings.npy")
    b = np.load(tmp_path / "b" / "embeddings.npy")
    np.testing.assert_allclose(a, b, atol=1e-4)
    _, ids_a = CosineIndex(a, "torch").search(a, 1)
    _, ids_b = CosineIndex(b, "torch").search(b, 1)
    np.testing.assert_array_equal(ids_a, ids_b)
