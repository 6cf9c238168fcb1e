"""Registry behaviour: registration, lookup, validation errors, lazy builders."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visionforge.config import ComponentConfig
from visionforge.errors import (
    AmbiguousComponentError,
    ConfigError,
    DuplicateComponentError,
    UnknownComponentError,
)
from visionforge.registry import Registry, resolve_reference


class WidthConfig(ComponentConfig):
    width: int = 8
    name: str = "net"


def make_registry() -> Registry[Any]:
    return Registry("model")


def test_decorator_returns_function_unchanged_and_builds() -> None:
    reg = make_registry()

    def build(cfg: WidthConfig) -> dict[str, Any]:
        return {"width": cfg.width}

    assert reg.register("net", config=WidthConfig)(build) is build
    assert reg.build({"type": "net", "width": 3}) == {"width": 3}
    assert reg.build({"type": "core:net"}) == {"width": 8}
    assert reg.names() == ["net"]
    assert reg.names(qualified=True) == ["core:net"]
    assert "net" in reg and "nope" not in reg


def test_register_by_call_with_lazy_reference_resolves_on_build() -> None:
    reg = make_registry()
    reg.register("json_dumps", config=WidthConfig, builder="json:dumps")
    entry = reg.get("json_dumps")
    assert entry.origin == "json:dumps"
    assert entry.resolve_builder() is resolve_reference("json:dumps")


def test_unknown_name_lists_known_and_suggests() -> None:
    reg = make_registry()
    reg.register("resnet", config=WidthConfig, builder=dict)
    reg.register("vit", config=WidthConfig, builder=dict)
    with pytest.raises(UnknownComponentError) as err:
        reg.get("resnt")
    message = str(err.value)
    assert "unknown model 'resnt'" in message
    assert "did you mean 'resnet'?" in message
    assert "known: resnet, vit" in message
    assert isinstance(err.value, LookupError)


def test_duplicate_qualified_name_names_both_origins() -> None:
    reg = make_registry()

    def first(cfg: WidthConfig) -> None: ...

    def second(cfg: WidthConfig) -> None: ...

    reg.register("net", config=WidthConfig, builder=first)
    with pytest.raises(DuplicateComponentError) as err:
        reg.register("net", config=WidthConfig, builder=second)
    assert "first" in str(err.value) and "second" in str(err.value)


def test_same_bare_name_in_two_namespaces_needs_qualification() -> None:
    reg = make_registry()
    reg.register("yolo", config=WidthConfig, builder=dict, namespace="coco")
    reg.register("yolo", config=WidthConfig, builder=dict, namespace="other")
    with pytest.raises(AmbiguousComponentError, match="coco:yolo, other:yolo"):
        reg.get("yolo")
    assert reg.get("coco:yolo").namespace == "coco"


def test_invalid_field_gives_dotted_path() -> None:
    reg = make_registry()
    reg.register("net", config=WidthConfig, builder=dict)
    with pytest.raises(ConfigError) as err:
        reg.build({"type": "net", "width": "wide"}, "model")
    assert "model.width" in str(err.value)
    with pytest.raises(ConfigError, match="model.depth: Extra inputs are not permitted"):
        reg.validate({"type": "net", "depth": 3}, "model")
    with pytest.raises(ConfigError, match="model.type"):
        reg.validate({"width": 3}, "model")
    with pytest.raises(UnknownComponentError, match=r"^model\.type: unknown model 'nett'"):
        reg.validate({"type": "nett"}, "model")


def test_loader_runs_only_when_name_is_missing() -> None:
    calls: list[str | None] = []
    reg = make_registry()

    def loader(plugin: str | None) -> None:
        calls.append(plugin)
        if plugin in (None, "late"):
            reg.register("thing", config=WidthConfig, builder=dict, namespace="late")

    reg.set_loader(loader)
    reg.register("early", config=WidthConfig, builder=dict)
    reg.get("early")
    assert calls == []
    assert reg.get("late:thing").namespace == "late"
    assert calls == ["late"]


def test_names_with_colon_are_rejected() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        make_registry().register("a:b", config=WidthConfig, builder=dict)


@given(width=st.integers(-(10**6), 10**6), name=st.text(max_size=20))
def test_valid_fields_round_trip(width: int, name: str) -> None:
    reg = make_registry()
    reg.register("net", config=WidthConfig, builder=lambda cfg: cfg)
    cfg = reg.build({"type": "net", "width": width, "name": name})
    assert (cfg.width, cfg.name) == (width, name)
