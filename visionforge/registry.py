"""Typed component registries.

A registry maps names to entries; an entry is a name, a pydantic config class and a
builder. Builders may be given as lazy references (``"package.module:function"``) so
that registering, listing and validating never import heavy code::

    from visionforge import models
    from visionforge.config import ComponentConfig

    class TinyNetConfig(ComponentConfig):
        width: int = 16

    @models.register("tiny_net", config=TinyNetConfig)
    def build_tiny_net(cfg: TinyNetConfig) -> torch.nn.Module: ...

    model = models.build({"type": "tiny_net", "width": 32})
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, get_args, overload

from pydantic import BaseModel, ValidationError

from visionforge.errors import (
    AmbiguousComponentError,
    ConfigError,
    DuplicateComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from visionforge.known_plugins import missing_component_hint

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

CORE_NAMESPACE = "core"
OBJECT_NAMESPACE = "object"
"""Namespace of recipe blocks that stand for Python objects (``Trainer.from_objects``)."""


def resolve_reference(ref: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        raise ValueError(f"lazy reference {ref!r} must look like 'package.module:function'")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic model classes an annotation holds (through Optional, unions, lists)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _walk(
    model: type[BaseModel], loc: Sequence[int | str]
) -> tuple[list[type[BaseModel]], list[int | str]]:
    """The model classes the block at ``loc`` may be, and ``loc`` without the tags pydantic
    inserts for discriminated unions (``optimizer.sgd.lr`` -> ``optimizer.lr``)."""
    candidates = [model]
    shown: list[int | str] = []
    for part in loc:
        found: list[type[BaseModel]] = []
        tagged = False
        for candidate in candidates:
            if isinstance(part, str) and part in candidate.model_fields:
                found += _models_in(candidate.model_fields[part].annotation)
            elif isinstance(part, int):
                found.append(candidate)  # a list item: the item model was already taken
            elif _type_tag(candidate) == part:
                found.append(candidate)  # a discriminated union names its member
                tagged = True
        if not tagged:
            shown.append(part)
        candidates = found
    return candidates, shown


def _type_tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return field.default if field is not None else None


def validation_problems(
    err: ValidationError, path: str, model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """(dotted recipe path, message) for each problem of a pydantic error. With ``model``
    (the class that was validated), an unknown key gets a "did you mean" from its block."""
    problems = []
    for problem in err.errors():
        parts: Sequence[int | str] = problem["loc"]
        value = problem.get("input")
        message = problem["msg"] + ("" if isinstance(value, Mapping) else f" (got {value!r})")
        if model is not None:
            *parent, key = parts or [""]
            candidates, shown = _walk(model, parent)
            parts = [*shown, key] if parts else parts
            names = {name for candidate in candidates for name in candidate.model_fields}
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            if problem["type"] == "extra_forbidden" and close:
                message += f"; did you mean {close[0]!r}?"
        loc = ".".join(str(p) for p in (path, *parts) if p != "")
        problems.append((loc, message))
    return problems


def format_validation_error(
    err: ValidationError, path: str, model: type[BaseModel] | None = None
) -> str:
    """Render a pydantic error on one line, each problem with its dotted recipe path."""
    return "; ".join(f"{loc}: {message}" for loc, message in validation_problems(err, path, model))


def _origin_of(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", type(obj).__name__)
    try:
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return f"{module}:{qualname}"
    return f"{module}:{qualname} (line {line})"


@dataclass
class Entry(Generic[T]):
    """One registered component."""

    name: str
    namespace: str
    config: type[BaseModel]
    builder: Callable[..., T] | str
    description: str = ""
    kind: str = "component"
    _resolved: Callable[..., T] | None = field(default=None, repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}:{self.name}"

    @property
    def origin(self) -> str:
        return _origin_of(self.builder)

    def resolve_builder(self) -> Callable[..., T]:
        """The builder callable, importing a lazy reference on first use; a reference that
        cannot be imported is a PluginLoadError naming the component and its plugin."""
        if self._resolved is None:
            if isinstance(self.builder, str):
                try:
                    self._resolved = resolve_reference(self.builder)
                except (ImportError, AttributeError) as err:
                    reason = f"{type(err).__name__}: {err}".splitlines()[0]
                    raise PluginLoadError(
                        f"{self.kind} {self.name!r} of plugin {self.namespace!r}: cannot import "
                        f"its builder {self.builder} ({reason}); reinstall the plugin or the "
                        "package it needs"
                    ) from None
            else:
                self._resolved = self.builder
        return self._resolved

    def validate(self, fields: Mapping[str, Any], path: str) -> BaseModel:
        """Validate ``fields`` (without ``type``) with this entry's config class."""
        try:
            return self.config.model_validate(dict(fields))
        except ValidationError as err:
            problems = validation_problems(err, path, self.config)
            raise ConfigError(
                "; ".join(f"{loc}: {message}" for loc, message in problems),
                paths=[loc for loc, _ in problems],
            ) from None


class Registry(Generic[T]):
    """Names -> (config class, builder) for one kind of component."""

    def __init__(self, kind: str, loader: Callable[[str | None], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._loader = loader
        self._current_namespace = CORE_NAMESPACE

    def set_loader(self, loader: Callable[[str | None], None] | None) -> None:
        """Install the hook that loads plugins when a name is missing."""
        self._loader = loader

    def set_namespace(self, namespace: str) -> None:
        """Namespace given to entries registered from now on (set while a plugin registers)."""
        self._current_namespace = namespace

    @overload
    def register(
        self,
        name: str,
        *,
        config: type[BaseModel],
        builder: None = None,
        description: str = "",
        namespace: str | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def register(
        self,
        name: str,
        *,
        config: type[BaseModel],
        builder: Callable[..., T] | str,
        description: str = "",
        namespace: str | None = None,
    ) -> Callable[..., T] | str: ...

    def register(
        self,
        name: str,
        *,
        config: type[BaseModel],
        builder: Callable[..., T] | str | None = None,
        description: str = "",
        namespace: str | None = None,
    ) -> Any:
        """Register a component; used as a decorator (no ``builder``) or called directly.

        Returns the builder unchanged so decorated functions keep their type.
        """
        if ":" in name:
            raise ValueError(f"component name {name!r} must not contain ':'")

        def add(fn: Any) -> Any:
            ns = namespace or self._current_namespace
            entry: Entry[T] = Entry(
                name, ns, config, fn, description or _first_doc_line(fn), self.kind
            )
            existing = self._entries.get(entry.qualified_name)
            if existing is not None:
                raise DuplicateComponentError(
                    f"{self.kind} {entry.qualified_name!r} is registered twice: "
                    f"first by {existing.origin}, again by {entry.origin}"
                )
            self._entries[entry.qualified_name] = entry
            return fn

        if builder is None:
            return add
        return add(builder)

    def unregister(self, name: str) -> None:
        """Remove an entry (qualified or unambiguous bare name)."""
        del self._entries[self.get(name).qualified_name]

    def _lookup(self, name: str) -> list[Entry[T]]:
        if ":" in name:
            entry = self._entries.get(name)
            return [entry] if entry else []
        return [e for e in self._entries.values() if e.name == name]

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name`` (``"yolo"`` or ``"coco:yolo"``), loading plugins if needed."""
        found = self._lookup(name)
        if not found and self._loader is not None:
            self._loader(name.partition(":")[0] if ":" in name else None)
            found = self._lookup(name)
        if len(found) == 1:
            return found[0]
        if found:
            options = ", ".join(sorted(e.qualified_name for e in found))
            raise AmbiguousComponentError(
                f"{self.kind} {name!r} is ambiguous; qualify it with its plugin: {options}"
            )
        if name.startswith(f"{OBJECT_NAMESPACE}:"):
            raise UnknownComponentError(
                f"{self.kind} {name!r} was a Python object given to Trainer.from_objects, not "
                "a registered component; rebuild it in Python and load the weights with "
                "visionforge.engine.load_checkpoint"
            )
        elsewhere = missing_component_hint(self.kind, name.rpartition(":")[2])
        if elsewhere is not None:
            raise UnknownComponentError(elsewhere)
        known = self.names()
        close = difflib.get_close_matches(name, known + self.names(qualified=True), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none registered"
        raise UnknownComponentError(f"unknown {self.kind} {name!r}{hint} (known: {listing})")

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownComponentError:
            return False
        return True

    def loaded_names(self) -> set[str]:
        """Qualified names registered so far, without loading any plugin."""
        return set(self._entries)

    def names(self, qualified: bool = False) -> list[str]:
        """Sorted names of every registered entry (loads all plugins)."""
        if self._loader is not None:
            self._loader(None)
        if qualified:
            return sorted(self._entries)
        return sorted({e.name for e in self._entries.values()})

    def entries(self) -> Iterator[Entry[T]]:
        """All entries, plugins loaded."""
        self.names()
        yield from sorted(self._entries.values(), key=lambda e: e.qualified_name)

    def validate(self, spec: Mapping[str, Any] | BaseModel, path: str = "") -> BaseModel:
        """Validate a ``{"type": name, **fields}`` block; errors name ``path``."""
        return self._validated(spec, path)[1]

    def build(self, spec: Mapping[str, Any] | BaseModel, path: str = "", **extra: Any) -> T:
        """Validate ``spec`` and call its builder with the config (and ``extra`` kwargs)."""
        entry, cfg = self._validated(spec, path)
        return entry.resolve_builder()(cfg, **extra)

    def _validated(
        self, spec: Mapping[str, Any] | BaseModel, path: str
    ) -> tuple[Entry[T], BaseModel]:
        data = _as_dict(spec)
        entry = self._entry_for(data, path)
        fields = {k: v for k, v in data.items() if k != "type"}
        return entry, entry.validate(fields, path)

    def _entry_for(self, data: Mapping[str, Any], path: str) -> Entry[T]:
        name = data.get("type")
        where = f"{path}.type" if path else "type"
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{where}: a {self.kind} block needs a 'type' naming the component", paths=[where]
            )
        try:
            return self.get(name)
        except UnknownComponentError as err:
            raise UnknownComponentError(f"{where}: {err}", paths=[where]) from None
        except AmbiguousComponentError as err:
            raise AmbiguousComponentError(f"{where}: {err}", paths=[where]) from None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _as_dict(spec: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    if isinstance(spec, BaseModel):
        return spec.model_dump()
    return dict(spec)


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) if not isinstance(obj, str) else None
    return doc.strip().splitlines()[0] if doc else ""


@dataclass(frozen=True)
class Registries:
    """The registries, one per component kind; passed to ``visionforge_register``."""

    datasets: Registry[Any]
    models: Registry[Any]
    losses: Registry[Any]
    evaluators: Registry[Any]
    runners: Registry[Any]
    exporters: Registry[Any]
    converters: Registry[Any]

    def all(self) -> dict[str, Registry[Any]]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def set_namespace(self, namespace: str) -> None:
        for registry in self.all().values():
            registry.set_namespace(namespace)


REGISTRIES = Registries(
    datasets=Registry("dataset"),
    models=Registry("model"),
    losses=Registry("loss"),
    evaluators=Registry("evaluator"),
    runners=Registry("runner"),
    exporters=Registry("exporter"),
    converters=Registry("converter"),
)
