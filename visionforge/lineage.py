"""Artifact manifests: what an artifact is, what it came from and how it was made.

Every artifact file ``X`` (dataset, checkpoint, ONNX, HEF) gets a sidecar ``X.manifest.json``
holding id, kind, parents, recipe hash, metrics, sha256, size, created and cost. A directory
artifact (a training run) keeps its manifest at ``DIR/manifest.json``.

A parent is recorded by path, id and sha256 and resolved by all three
(:func:`resolve_parent`): a file at the recorded path that is another artifact now (a run
overwritten, ``best.ckpt`` improved since the export) is reported, never silently followed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from visionforge import storage
from visionforge.errors import StorageError

if TYPE_CHECKING:
    from visionforge.config import Recipe

MANIFEST_SUFFIX = ".manifest.json"
RUN_MANIFEST = "manifest.json"


def _is_dir(path: str) -> bool:
    if not storage.is_remote(path):
        return os.path.isdir(path.removeprefix("file://"))
    fs, inner = storage.filesystem(path)
    return bool(fs.isdir(inner))


def manifest_path(artifact: str) -> str:
    """Where the manifest of ``artifact`` lives (``DIR/manifest.json`` for a run folder)."""
    text = os.fspath(artifact)
    if text.endswith(MANIFEST_SUFFIX) or os.path.basename(text) == RUN_MANIFEST:
        return text
    if _is_dir(text):
        return storage.join(text.rstrip("/"), RUN_MANIFEST)
    return text + MANIFEST_SUFFIX


def file_digest(path: str) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a local file or URL, streamed."""
    digest = hashlib.sha256()
    size = 0
    with storage.open_file(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_manifest(
    artifact: str,
    kind: str,
    *,
    parents: Iterable[str] = (),
    recipe: Recipe | None = None,
    metrics: Mapping[str, float] | None = None,
    cost: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the manifest of ``artifact`` (a file, or a run directory) and return it.

    ``parents`` are artifact paths; each parent's manifest id is recorded when it has one.
    The manifest is written after the artifact is complete, so a manifest implies a whole
    artifact (on object stores too).
    """
    path = os.fspath(artifact)
    is_dir = _is_dir(path)
    sha256, size = (None, None) if is_dir else file_digest(path)
    manifest: dict[str, Any] = {
        "id": f"{kind}-{uuid.uuid4().hex[:12]}",
        "kind": kind,
        "path": path,
        "parents": [_parent_ref(p) for p in parents],
        "recipe_sha256": recipe.sha256() if recipe is not None else None,
        "metrics": dict(metrics or {}),
        "sha256": sha256,
        "size": size,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cost": dict(cost) if cost else None,
    }
    if extra:
        manifest.update(extra)
    data = json.dumps(manifest, indent=2, sort_keys=False).encode()
    storage.write_bytes_atomic(manifest_path(path), data)
    return manifest


def read_manifest(artifact: str) -> dict[str, Any]:
    """The manifest of ``artifact`` (or of the manifest file itself)."""
    where = manifest_path(artifact)
    try:
        data = json.loads(storage.read_text(where))
    except StorageError:
        raise StorageError(
            f"{artifact}: no lineage manifest ({where} not found); "
            "artifacts written by visionforge train/export have one"
        ) from None
    except json.JSONDecodeError as err:
        raise StorageError(f"{where}: invalid manifest JSON: {err}") from None
    return data


def _parent_ref(parent: str) -> dict[str, Any]:
    """How a parent is recorded: path, and the id and sha256 its manifest gives."""
    ref: dict[str, Any] = {"path": os.fspath(parent), "id": None, "sha256": None}
    with contextlib.suppress(StorageError):
        manifest = read_manifest(parent)
        ref["id"], ref["sha256"] = manifest["id"], manifest.get("sha256")
    return ref


def file_problem(manifest: Mapping[str, Any]) -> str | None:
    """Why the file at ``manifest["path"]`` is not the artifact the manifest describes (its
    sha256 differs, or it is gone), or None when it is (directories are not hashed)."""
    recorded = manifest.get("sha256")
    path = manifest.get("path")
    if not recorded or not path:
        return None
    if not storage.exists(path):
        return f"{path} is gone"
    actual, _ = file_digest(path)
    if actual != recorded:
        return (
            f"{path} changed since its manifest was written (sha256 {actual[:12]}, "
            f"manifest {recorded[:12]})"
        )
    return None


def resolve_parent(ref: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, problem) of a recorded parent: the manifest found at its path, and why it is
    not the recorded parent (another id or sha256, a changed file, no manifest) or None."""
    path = ref["path"]
    if not storage.exists(manifest_path(path)):
        return None, "no manifest"
    manifest = read_manifest(path)
    if ref.get("id") and manifest.get("id") != ref["id"]:
        return manifest, (
            f"not the recorded parent: {path} is now {manifest.get('kind')} {manifest.get('id')}, "
            f"the parent was {ref['id']} (overwritten or replaced)"
        )
    if ref.get("sha256") and manifest.get("sha256") != ref["sha256"]:
        return manifest, (
            f"not the recorded parent: {path} has sha256 {str(manifest.get('sha256'))[:12]}, "
            f"the parent had {ref['sha256'][:12]}"
        )
    problem = file_problem(manifest)
    return manifest, f"not the recorded parent: {problem}" if problem else None


def lineage_chain(artifact: str) -> list[dict[str, Any]]:
    """Manifests from ``artifact`` back to its roots, depth first along the first parent.

    Other parents are listed inside each manifest. Each file is checked against its
    manifest's sha256 and each parent resolved by id and sha256 (:func:`resolve_parent`); an
    item that does not match carries a ``problem`` and ends the chain (it is not followed).
    A parent without a manifest ends it as ``missing``. Cycles end the chain.
    """
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    manifest = read_manifest(artifact)
    problem = file_problem(manifest)
    if problem:
        manifest = {**manifest, "problem": problem}
    while True:
        if manifest["id"] in seen:
            break
        seen.add(manifest["id"])
        chain.append(manifest)
        parents = manifest.get("parents") or []
        if not parents or manifest.get("problem"):
            break
        ref = parents[0]
        parent, problem = resolve_parent(ref)
        if parent is None:
            chain.append({"id": ref.get("id"), "kind": "?", "path": ref["path"], "missing": True})
            break
        manifest = {**parent, "problem": problem, "recorded": dict(ref)} if problem else parent
    return chain


def format_chain(chain: list[dict[str, Any]]) -> str:
    """Human-readable chain, newest first: ``onnx <- checkpoint <- dataset``."""
    lines = []
    for depth, item in enumerate(chain):
        arrow = "" if depth == 0 else "  " * (depth - 1) + "<- "
        if item.get("missing"):
            lines.append(f"{arrow}{item['path']} (no manifest)")
            continue
        if item.get("problem") and depth > 0:
            lines.append(f"{arrow}!! {item['problem']}")
            continue
        metrics = ", ".join(
            f"{k}={v:.4g}"
            for k, v in (item.get("metrics") or {}).items()
            if isinstance(v, (int, float))
        )
        sha = (item.get("sha256") or "")[:12]
        details = " ".join(x for x in (sha and f"sha256:{sha}", metrics) if x)
        lines.append(f"{arrow}{item['kind']} {item['id']} {item['path']} {details}".rstrip())
        if item.get("problem"):
            lines.append(f"   !! {item['problem']}")
    return "\n".join(lines)
