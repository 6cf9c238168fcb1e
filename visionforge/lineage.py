"""Artifact manifests: what an artifact is, what it came from and how it was made.

Every artifact file ``X`` (dataset, checkpoint, ONNX, HEF) gets a sidecar ``X.manifest.json``
holding id, kind, parents (ids and paths), recipe hash, metrics, sha256, size, created and
cost. A directory artifact (a training run) keeps its manifest at ``DIR/manifest.json``.
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
    ref: dict[str, Any] = {"path": os.fspath(parent), "id": None}
    with contextlib.suppress(StorageError):
        ref["id"] = read_manifest(parent)["id"]
    return ref


def lineage_chain(artifact: str) -> list[dict[str, Any]]:
    """Manifests from ``artifact`` back to its roots, depth first along the first parent.

    Other parents are listed inside each manifest. Cycles end the chain.
    """
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = artifact
    while current is not None:
        manifest = read_manifest(current)
        if manifest["id"] in seen:
            break
        seen.add(manifest["id"])
        chain.append(manifest)
        parents = manifest.get("parents") or []
        current = parents[0]["path"] if parents else None
        if current is not None and not storage.exists(manifest_path(current)):
            chain.append(
                {"id": parents[0].get("id"), "kind": "?", "path": current, "missing": True}
            )
            break
    return chain


def format_chain(chain: list[dict[str, Any]]) -> str:
    """Human-readable chain, newest first: ``onnx <- checkpoint <- dataset``."""
    lines = []
    for depth, item in enumerate(chain):
        arrow = "" if depth == 0 else "  " * (depth - 1) + "<- "
        if item.get("missing"):
            lines.append(f"{arrow}{item['path']} (no manifest)")
            continue
        metrics = ", ".join(
            f"{k}={v:.4g}"
            for k, v in (item.get("metrics") or {}).items()
            if isinstance(v, (int, float))
        )
        sha = (item.get("sha256") or "")[:12]
        details = " ".join(x for x in (sha and f"sha256:{sha}", metrics) if x)
        lines.append(f"{arrow}{item['kind']} {item['id']} {item['path']} {details}".rstrip())
    return "\n".join(lines)
