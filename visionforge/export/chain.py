"""Export sources and exporter chains.

``visionforge export SOURCE --to TARGET`` starts from a recipe or checkpoint (a model) or from
an upstream artifact with its lineage manifest (``model.onnx``), and runs the exporters that
lead from the source's kind to the target: an exporter that cannot take the source takes the
output of the exporter named after one of its ``source_kinds`` (artifact kind ``onnx`` is
made by the exporter ``onnx``), so ``--to hailo`` from a checkpoint exports ONNX first.

Importing this module is cheap (no torch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visionforge import lineage, storage
from visionforge.errors import ConfigError, StorageError
from visionforge.export import ExportError
from visionforge.interfaces import Artifact, Exporter
from visionforge.registry import REGISTRIES

if TYPE_CHECKING:
    from visionforge.config import Recipe

RECIPE_SUFFIXES = (".yaml", ".yml", ".json")
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
ARTIFACT_SUFFIXES = {".onnx": "onnx"}
"""Artifact kinds recognised by suffix when a file has no manifest."""

MODEL_KINDS = ("recipe", "checkpoint")


def source_kind(path: str) -> str:
    """``"recipe"``, ``"checkpoint"`` or an artifact kind (``"onnx"``) of a SOURCE path.

    A lineage manifest beside the file is the truth; without one the suffix decides. Anything
    else is refused with one line saying what SOURCE may be.
    """
    lower = path.lower()
    if lower.endswith(RECIPE_SUFFIXES):
        return "recipe"
    suffix = os.path.splitext(lower)[1]
    by_suffix = "checkpoint" if suffix in CHECKPOINT_SUFFIXES else ARTIFACT_SUFFIXES.get(suffix)
    if not storage.exists(path):
        if by_suffix is None:
            raise StorageError(f"SOURCE {path}: no such file")
        return by_suffix  # the loader of that kind says it is missing
    kind = _manifest_kind(path) or by_suffix
    if kind is None:
        raise ConfigError(
            f"SOURCE {path}: not a recipe ({'/'.join(RECIPE_SUFFIXES)}), a checkpoint "
            f"({'/'.join(CHECKPOINT_SUFFIXES)}) or an artifact with a lineage manifest "
            f"(e.g. model.onnx beside model.onnx{lineage.MANIFEST_SUFFIX})"
        )
    return kind


def _manifest_kind(path: str) -> str | None:
    if not storage.exists(lineage.manifest_path(path)):
        return None
    kind = lineage.read_manifest(path).get("kind")
    if not isinstance(kind, str) or not kind:
        raise StorageError(f"{lineage.manifest_path(path)}: manifest has no 'kind'")
    return kind


def load_artifact(path: str) -> Artifact:
    """An upstream artifact: kind and manifest from its lineage manifest (the suffix's kind and
    an empty manifest when it has none)."""
    kind = source_kind(path)
    if kind in MODEL_KINDS:
        raise ConfigError(f"{path}: a {kind}, not an exported artifact")
    if not storage.exists(path):
        raise StorageError(f"{path}: no such file")
    manifest = lineage.read_manifest(path) if storage.exists(lineage.manifest_path(path)) else {}
    return Artifact(path=path, kind=kind, manifest=manifest)


def checkpoint_in_lineage(artifact: Artifact) -> str | None:
    """The checkpoint ``artifact`` descends from (first parents, e.g. ONNX -> checkpoint).

    Each parent is resolved by id and sha256 (:func:`visionforge.lineage.resolve_parent`): one
    that is no longer the recorded file is reported, never silently followed. None when the
    chain holds no checkpoint or a parent has no manifest.
    """
    manifest = artifact.manifest
    seen: set[str] = set()
    while True:
        parents = manifest.get("parents") or []
        if not parents:
            return None
        ref = parents[0]
        path = str(ref.get("path"))
        if path in seen:
            return None
        seen.add(path)
        parent, problem = lineage.resolve_parent(ref)
        if parent is None:
            return None
        if problem:
            raise StorageError(
                f"{manifest.get('path', artifact.path)}: parent {path}: {problem}; re-export "
                "from the current checkpoint or pass the inputs explicitly"
            )
        if parent.get("kind") == "checkpoint":
            return path
        manifest = parent


def recipe_of_checkpoint(checkpoint: str, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe stored in a visionforge checkpoint, with ``--set`` overrides applied."""
    from visionforge.config import recipe_from_dict
    from visionforge.engine import load_checkpoint

    stored = load_checkpoint(checkpoint)["recipe"]
    return recipe_from_dict(stored, overrides, source=f"{checkpoint} (stored recipe)")


@dataclass
class Step:
    """One exporter of a chain: its registry name, config block and built exporter."""

    name: str
    block: dict[str, Any]
    exporter: Exporter


def plan_chain(target: str, source: str, block_for: Callable[[str], dict[str, Any]]) -> list[Step]:
    """The exporters leading from kind ``source`` (``"model"``, ``"onnx"``) to ``target``.

    ``block_for(name)`` gives the config block of the exporter ``name`` (``{"type": name}``
    plus its options). Raises :class:`ConfigError` when no chain exists.
    """
    steps: list[Step] = []
    name = target
    while True:
        block = block_for(name)
        exporter: Exporter = REGISTRIES.exporters.build(block, "export")
        steps.insert(0, Step(name=name, block=block, exporter=exporter))
        kinds = tuple(exporter.source_kinds)
        if source in kinds:
            return steps
        upstream = next((k for k in kinds if _is_exporter(k)), None)
        if upstream is None or upstream in {s.name for s in steps}:
            raise ConfigError(
                f"--to {target}: the {name} exporter takes {' or '.join(kinds)}, and no "
                f"exporter chain leads there from a {source} source",
                paths=["export.type"],
            )
        name = upstream


def _is_exporter(name: str) -> bool:
    return name in REGISTRIES.exporters


def run_chain(
    steps: Sequence[Step],
    source: Any,
    *,
    outs: Sequence[str],
    recipe: Recipe | None,
    parents: Sequence[str],
    example: Any = None,
) -> list[Artifact]:
    """Run ``steps`` in order, each on the previous one's artifact; return every artifact.

    ``outs`` holds one output path per step; the first step gets ``source``, ``parents`` and
    ``example``, each later one the artifact before it as source and parent.
    """
    if len(outs) != len(steps):
        raise ExportError(f"{len(steps)} export steps but {len(outs)} output paths")
    artifacts: list[Artifact] = []
    current, current_parents = source, list(parents)
    for index, (step, out) in enumerate(zip(steps, outs, strict=True)):
        artifact = step.exporter.export(
            current,
            out=out,
            recipe=recipe,
            parents=current_parents,
            example=example if index == 0 else None,
        )
        artifacts.append(artifact)
        current, current_parents = artifact, [artifact.path]
    return artifacts


def chain_outputs(final: str, steps: Sequence[Step]) -> list[str]:
    """Output paths: ``final`` for the last step, the same stem with each earlier step's
    suffix before it (``best.hef`` <- ``best.onnx``)."""
    stem = os.path.splitext(final)[0]
    return [stem + step.exporter.suffix for step in steps[:-1]] + [final]


def describe(artifact: Artifact) -> str:
    """``path (kind; max abs diff vs PyTorch 1e-06)`` for the CLI's summary line."""
    metrics: Mapping[str, Any] = artifact.manifest.get("metrics") or {}
    diff = metrics.get("max_abs_diff")
    details = f"; max abs diff vs PyTorch {diff:.3g}" if isinstance(diff, (int, float)) else ""
    return f"{artifact.path} ({artifact.kind}{details})"


__all__ = [
    "Step",
    "chain_outputs",
    "checkpoint_in_lineage",
    "describe",
    "load_artifact",
    "plan_chain",
    "recipe_of_checkpoint",
    "run_chain",
    "source_kind",
]
