"""Recipe loading, defaults, overrides and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from visionforge.config import (
    Recipe,
    apply_overrides,
    load_recipe,
    recipe_from_dict,
    recipe_json_schema,
)
from visionforge.errors import ConfigError, StorageError, UnknownComponentError

QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart" / "recipe.yaml"


def minimal() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def test_quickstart_recipe_validates_and_fills_defaults() -> None:
    recipe = load_recipe(QUICKSTART)
    assert recipe.name == "quickstart"
    assert recipe.trainer.output == str(Path("runs") / "quickstart")
    assert recipe.schedule.type == "cosine" and recipe.schedule.warmup_epochs == 1
    assert recipe.schedule.min_lr == 0.0  # a default: the recipe does not set it
    assert recipe.optimizer.type == "sgd" and recipe.optimizer.momentum == 0.9
    assert recipe.model.fields() == {"name": "resnet10t", "num_classes": 4}


def test_overrides_apply_yaml_typed_values() -> None:
    recipe = load_recipe(
        QUICKSTART,
        ["trainer.epochs=5", "optimizer.lr=0.1", "trainer.ema.decay=0.99", "name=x"],
    )
    assert recipe.trainer.epochs == 5
    assert recipe.optimizer.lr == 0.1
    assert recipe.trainer.ema is not None and recipe.trainer.ema.decay == 0.99
    assert recipe.name == "x"


def test_override_errors() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["trainer.epochs"])
    with pytest.raises(ConfigError, match="trainer.epochs is not a block"):
        apply_overrides({"trainer": {"epochs": 3}}, ["trainer.epochs.x=1"])


def test_wrong_type_names_dotted_path() -> None:
    data = minimal()
    data["model"]["num_classes"] = "four"
    with pytest.raises(ConfigError, match=r"model\.num_classes: Input should be a valid integer"):
        recipe_from_dict(data)
    data = minimal()
    data["trainer"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"trainer\.epochs: Input should be greater than"):
        recipe_from_dict(data)


def test_unknown_component_is_one_line_with_suggestion() -> None:
    data = minimal()
    data["data"]["train"]["type"] = "synthetic_clasification"
    with pytest.raises(UnknownComponentError) as err:
        recipe_from_dict(data, source="r.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert "data.train.type" in message and "did you mean 'synthetic_classification'" in message


def test_unknown_top_level_block() -> None:
    data = minimal()
    data["modle"] = {}
    with pytest.raises(ConfigError, match="modle: Extra inputs are not permitted"):
        recipe_from_dict(data)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {type: timm\ntrainer:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_recipe(bad)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nope.yaml: file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_hash_is_stable_and_sensitive() -> None:
    a, b = load_recipe(QUICKSTART), load_recipe(QUICKSTART)
    assert a.sha256() == b.sha256()
    assert load_recipe(QUICKSTART, ["trainer.seed=1"]).sha256() != a.sha256()


def test_yaml_round_trip() -> None:
    recipe = load_recipe(QUICKSTART)
    again = Recipe.model_validate(yaml.safe_load(recipe.to_yaml()))
    assert again.sha256() == recipe.sha256()


def test_json_schema_covers_installed_components() -> None:
    schema = recipe_json_schema()
    models = schema["$defs"]["model_component"]["oneOf"]
    titles = {variant["title"] for variant in models}
    assert "core:timm" in titles
    timm = next(v for v in models if v["title"] == "core:timm")
    assert "num_classes" in timm["properties"] and "type" in timm["required"]
    assert schema["$defs"]["DataConfig"]["properties"]["train"]["$ref"].endswith(
        "dataset_component"
    )


@given(
    keys=st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4),
    value=st.one_of(st.integers(), st.booleans(), st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
)
def test_override_sets_nested_value(keys: list[str], value: object) -> None:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    result = apply_overrides({}, [".".join(keys) + "=" + text])
    node = result
    for key in keys[:-1]:
        node = node[key]
    parsed = yaml.safe_load(text)
    assert node[keys[-1]] == parsed
