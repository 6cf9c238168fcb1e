"""The calibration set: reproducible draw, exactly the recipe's eval transforms, 0-255 NHWC
when the normalization is folded, stored with a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.io import decode_image

from visionforge import lineage
from visionforge.config import Recipe
from visionforge.data import classification_transforms
from visionforge.errors import ConfigError
from visionforge_hailo import calibration as calib


def _images(recipe: Recipe) -> list[Path]:
    assert recipe.data.val is not None
    return sorted(Path(recipe.data.val.as_dict()["root"]).rglob("*.png"))


def test_folded_calibration_is_the_eval_transform_in_pixels(tmp_path: Path, recipe: Recipe) -> None:
    block, origin = calib.recipe_block(recipe)
    source = calib.eval_source(block, origin, recipe, fold=True)
    assert origin == "data.val" and source.folded and source.block["normalize"] is False
    out = str(tmp_path / "c.npy")
    array, manifest = calib.write_calibration(
        source, out, size=4, seed=3, input_hwc=(16, 16, 3), recipe=recipe
    )
    assert array.shape == (4, 16, 16, 3) and array.dtype == np.float32
    assert manifest["indices"] == calib.draw_indices(6, 4, 3)
    assert manifest["class_names"] == ["ace", "king"] and manifest["range"] == "0-255"
    assert lineage.read_manifest(out)["kind"] == "calibration"
    transform = classification_transforms(16, "eval", normalize=False)
    paths = _images(recipe)
    for row, index in enumerate(manifest["indices"]):
        want = transform(tv_tensors.Image(decode_image(str(paths[index]))))
        np.testing.assert_array_equal(array[row], want.permute(1, 2, 0).float().numpy())
    assert float(array.max()) > 1.0  # pixels, not 0-1


def test_unfolded_calibration_is_the_normalized_model_input(tmp_path: Path, recipe: Recipe) -> None:
    block, origin = calib.recipe_block(recipe)
    source = calib.eval_source(block, origin, recipe, fold=False)
    assert not source.folded
    array, manifest = calib.write_calibration(
        source, str(tmp_path / "c.npy"), size=6, seed=0, input_hwc=(16, 16, 3)
    )
    transform = classification_transforms(16, "eval")  # normalized, as training evaluated
    for row, index in enumerate(manifest["indices"]):
        want = transform(tv_tensors.Image(decode_image(str(_images(recipe)[index]))))
        np.testing.assert_allclose(array[row], want.permute(1, 2, 0).numpy(), atol=1e-6)


def test_train_data_gets_eval_transforms_and_small_sets_are_noted(
    tmp_path: Path, recipe: Recipe
) -> None:
    block = recipe.data.train.as_dict()
    assert block["augment"] == "train"
    source = calib.eval_source(block, "data.train", recipe, fold=True)
    assert source.block["augment"] == "eval"
    _, manifest = calib.write_calibration(
        source, str(tmp_path / "c.npy"), size=1024, seed=0, input_hwc=(16, 16, 3)
    )
    assert manifest["indices"] == list(range(6))
    assert "only 6 images available (asked for 1024)" in manifest["notes"]
    assert "data.train.augment 'train' replaced by 'eval'" in manifest["notes"]


def test_wrong_size_names_the_field(tmp_path: Path, recipe: Recipe) -> None:
    block, origin = calib.recipe_block(recipe)
    source = calib.eval_source(block, origin, recipe, fold=True)
    with pytest.raises(ConfigError, match=r"data\.val\[\d\]: the eval transforms give \[16, 16"):
        calib.write_calibration(
            source, str(tmp_path / "c.npy"), size=2, seed=0, input_hwc=(8, 8, 3)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "recipe.yaml"]


def test_npy_shape_checked(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 8, 8, 3), np.float64))
    with pytest.raises(ConfigError, match="float64; save it as float32"):
        calib.load_npy(str(path), (8, 8, 3))
    with pytest.raises(ConfigError, match=r"expected \[N, 16, 16, 3\] \(NHWC\)"):
        calib.load_npy(str(path), (16, 16, 3))


@given(length=st.integers(1, 300), size=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
def test_draw_is_reproducible_distinct_and_in_range(length: int, size: int, seed: int) -> None:
    drawn = calib.draw_indices(length, size, seed)
    assert drawn == calib.draw_indices(length, size, seed)
    assert len(drawn) == min(length, size) == len(set(drawn))
    assert all(0 <= i < length for i in drawn) and drawn == sorted(drawn)


def test_missing_calibration_data_says_what_to_do(tmp_path: Path, recipe: Recipe) -> None:
    block, origin = calib.recipe_block(recipe)
    block["root"] = str(tmp_path / "container" / "val")  # e.g. a path inside a training job
    source = calib.eval_source(block, origin, recipe, fold=True)
    with pytest.raises(
        ConfigError, match=r"calibration data \(data\.val\): .*container/val.*--calibration DATA"
    ):
        calib.write_calibration(
            source, str(tmp_path / "c.npy"), size=2, seed=0, input_hwc=(16, 16, 3)
        )


def test_normalize_on_device_recipes_use_the_recipe_mean_and_std(
    tmp_path: Path, recipe: Recipe
) -> None:
    recipe.data.normalize_on_device = ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    block, origin = calib.recipe_block(recipe)
    source = calib.eval_source(block, origin, recipe, fold=False)
    assert source.normalization == calib.Normalization([0.5] * 3, [0.25] * 3)
    array, manifest = calib.write_calibration(
        source, str(tmp_path / "c.npy"), size=2, seed=0, input_hwc=(16, 16, 3)
    )
    transform = classification_transforms(16, "eval", normalize=False)
    for row, index in enumerate(manifest["indices"]):
        pixels = transform(tv_tensors.Image(decode_image(str(_images(recipe)[index]))))
        want = (pixels.permute(1, 2, 0).float().numpy() / 255 - 0.5) / 0.25
        np.testing.assert_allclose(array[row], want, atol=1e-6)
