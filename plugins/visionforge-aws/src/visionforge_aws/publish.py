"""``visionforge aws publish``: a run's artifacts as an organized project on S3.

Layout under the project prefix::

    models/<name>/<version>/              the run's artifacts with their manifests (best/last
                                          checkpoints, ONNX, HEF, ...), the run's manifest.json,
                                          recipe.json, metrics.csv, training_curves.png,
                                          metrics.json
    models/<name>/<version>/lineage/<id>/ ancestors that are not datasets (a teacher checkpoint)
    data/<id>/                            datasets in the lineage (the file their manifest
                                          describes, e.g. COCO annotations, and the manifest)
    metadata/project_manifest.json        every artifact: kind, key, size, sha256, parents by
                                          id, metrics, licence; per version: run, cost, registry

Published manifests are the originals with ``path`` (and each published parent's ``path``)
pointing at the published copy; ids and sha256 are unchanged, so ``visionforge lineage
s3://...`` follows the chain there by identity. Uploads go through :func:`~visionforge_aws.sync.
sync` (unchanged objects are skipped), the project manifest last. Publishing again changes
nothing: versions are immutable (a version holding other artifacts is refused), the project
manifest carries no publishing time, and an existing model package is found, not duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionforge import lineage, storage
from visionforge.errors import StorageError
from visionforge.run_folder import RUN_CHECKPOINTS
from visionforge_aws import publish_aws
from visionforge_aws.publish_aws import LifecyclePlan
from visionforge_aws.sync import SyncReport, sync

PROJECT_MANIFEST = "metadata/project_manifest.json"
PROJECT_FORMAT = "visionforge-project/1"
RUN_FILES = ("recipe.json", "metrics.csv", "training_curves.png")
"""Files of a run folder published beside its artifacts though they have no manifest."""
EPOCH_PREFIX = "epoch_"
UNKNOWN = "unknown"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class PublishError(StorageError):
    """Publishing refused: bad input, a changed artifact, or a version that holds others."""


@dataclass
class Item:
    """One artifact to publish: its manifest, where its file is now, where it goes."""

    manifest: dict[str, Any]
    source: str
    """The artifact's file (or folder, for a run) as found now: local path or URL."""
    key: str = ""
    """Destination key under the prefix (a folder key ending in '/' for directories)."""
    is_dir: bool = False
    ancestor: bool = False
    unresolved: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    @property
    def manifest_key(self) -> str:
        return (
            self.key + lineage.RUN_MANIFEST if self.is_dir else self.key + lineage.MANIFEST_SUFFIX
        )


@dataclass
class PublishReport:
    """What a publish did."""

    prefix: str
    name: str
    version: str
    artifacts: list[str] = field(default_factory=list)
    """Keys of the published artifacts."""
    uploaded: list[str] = field(default_factory=list)
    """Keys of the objects uploaded (unchanged ones are skipped)."""
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    model_package_arn: str | None = None
    model_package_created: bool = False
    lifecycle_changed: bool | None = None

    def summary(self) -> str:
        line = (
            f"published {self.name} {self.version}: {len(self.artifacts)} artifacts to "
            f"{self.prefix}; uploaded {len(self.uploaded)} objects, {self.skipped} unchanged"
        )
        if self.model_package_arn:
            verb = "registered" if self.model_package_created else "already registered"
            line += f"; {verb} {self.model_package_arn}"
        if self.lifecycle_changed is not None:
            line += "; lifecycle rules " + ("updated" if self.lifecycle_changed else "unchanged")
        return line


# ----------------------------------------------------------------------------- inputs


def _local_run_output(source: str, workdir: Path) -> str:
    """A run id's folder: the one holding the run manifest among the run's artifacts
    (``RunHandle.artifacts``: a SageMaker job's model is downloaded and extracted; a folder
    on S3 is downloaded here); any other ``source`` is returned as it is."""
    if storage.exists(source) or "/" in source or os.sep in source:
        return source
    from visionforge.runners import records

    try:
        files = records.attach(source).artifacts()
    except records.UnknownRunError:
        raise PublishError(
            f"{source}: no such file or folder, and no run with that id "
            "(publish takes run folders, artifacts with manifests, or run ids)"
        ) from None
    manifests = sorted(
        (f for f in files if f.replace(os.sep, "/").rsplit("/", 1)[-1] == lineage.RUN_MANIFEST),
        key=lambda f: f.count("/"),
    )
    if not manifests:
        raise PublishError(
            f"run {source}: no {lineage.RUN_MANIFEST} among its artifacts (not finished? "
            f"see: visionforge runs status {source})"
        )
    if not storage.is_remote(manifests[0]):
        return os.path.dirname(manifests[0])
    folder = manifests[0].rsplit("/", 1)[0]
    local = workdir / "runs" / source
    report = sync(folder, local, progress=False)
    if not report.ok:
        raise PublishError(f"run {source}: downloading {folder} failed: {report.failed}")
    return str(local)


def _checked(manifest: dict[str, Any], found_at: str) -> dict[str, Any]:
    """``manifest`` after checking that the file at ``found_at`` is the artifact it describes."""
    problem = lineage.file_problem({**manifest, "path": found_at})
    if problem:
        raise PublishError(
            f"{found_at}: {problem}; publish only artifacts that match their manifests "
            "(re-export, or restore the file)"
        )
    return manifest


def _run_folder_items(folder: Path, all_checkpoints: bool) -> tuple[Item, list[Item], list[Path]]:
    """(the run, its artifacts, its other published files) of a run folder."""
    run = Item(lineage.read_manifest(str(folder)), str(folder), is_dir=True)
    items: list[Item] = []
    for path in sorted(folder.rglob("*" + lineage.MANIFEST_SUFFIX)):
        artifact = path.with_name(path.name.removesuffix(lineage.MANIFEST_SUFFIX))
        if artifact.name.startswith(EPOCH_PREFIX) and not all_checkpoints:
            continue
        if not artifact.is_file():
            raise PublishError(f"{path}: the manifest's artifact {artifact.name} is missing")
        manifest = _checked(lineage.read_manifest(str(artifact)), str(artifact))
        item = Item(manifest, str(artifact))
        item.key = artifact.relative_to(folder).as_posix()
        items.append(item)
    extra = [folder / name for name in RUN_FILES if (folder / name).is_file()]
    return run, items, extra


def collect(
    sources: Sequence[str], workdir: Path, *, all_checkpoints: bool = False
) -> tuple[Item | None, list[Item], list[tuple[Path, str]]]:
    """(run, artifacts, extra files with their keys) named by ``sources``: one run folder (or
    run id) and/or artifact files with manifests. Keys are relative to the version folder."""
    run: Item | None = None
    items: list[Item] = []
    extra: list[tuple[Path, str]] = []
    for source in sources:
        path = _local_run_output(source, workdir)
        if storage.is_remote(path):
            raise PublishError(f"{source}: publish reads local run folders and files")
        local = Path(path).expanduser().resolve()
        if local.is_dir():
            if not (local / lineage.RUN_MANIFEST).is_file():
                raise PublishError(
                    f"{source}: a folder without {lineage.RUN_MANIFEST} (not a run folder "
                    "written by visionforge train)"
                )
            if run is not None:
                raise PublishError(
                    f"{source}: a second run folder ({run.source} came first); one version "
                    "holds one run: publish each under its own name or version"
                )
            run, found, files = _run_folder_items(local, all_checkpoints)
            items += found
            extra += [(f, f.name) for f in files]
            continue
        if not local.is_file():
            raise PublishError(f"{source}: no such file or folder")
        if not storage.exists(lineage.manifest_path(str(local))):
            raise PublishError(
                f"{source}: no visionforge manifest ({local.name}{lineage.MANIFEST_SUFFIX}); "
                "publish takes artifacts written by visionforge train/export"
            )
        item = Item(_checked(lineage.read_manifest(str(local)), str(local)), str(local))
        item.key = local.name
        items.append(item)
    keys = [item.key for item in items] + [key for _, key in extra]
    clashes = sorted({k for k in keys if keys.count(k) > 1})
    if clashes:
        raise PublishError(f"two artifacts would be published as {', '.join(clashes)}")
    return run, items, extra


def add_ancestors(items: list[Item]) -> list[Item]:
    """The lineage parents of ``items`` (and theirs), each resolved by id and sha256.

    A parent without a manifest, or one whose file no longer matches the recorded parent, is
    not published: it is listed in its child's ``unresolved`` with the reason.
    """
    known = {item.id: item for item in items}
    queue = list(items)
    found: list[Item] = []
    while queue:
        item = queue.pop(0)
        for ref in item.manifest.get("parents") or []:
            if ref.get("id") in known:
                continue
            parent, problem = lineage.resolve_parent(ref)
            if parent is None or problem:
                item.unresolved.append(
                    {
                        "path": ref.get("path"),
                        "id": ref.get("id"),
                        "reason": problem or "no manifest",
                    }
                )
                continue
            ancestor = Item(parent, str(ref["path"]), is_dir=parent.get("sha256") is None)
            ancestor.ancestor = True
            known[ancestor.id] = ancestor
            found.append(ancestor)
            queue.append(ancestor)
    return found


# ----------------------------------------------------------------------------- layout


def _basename(path: str) -> str:
    return os.path.basename(path.rstrip("/")) or "artifact"


def assign_keys(
    run: Item | None, items: list[Item], ancestors: list[Item], version_key: str
) -> None:
    """Destination keys: the version folder for the run and its artifacts, ``data/<id>/`` for
    datasets, ``<version>/lineage/<id>/`` for other ancestors."""
    if run is not None:
        run.key = version_key
    for item in items:
        item.key = version_key + item.key
    for item in ancestors:
        if item.manifest.get("kind") == "dataset":
            folder = f"data/{item.id}/"
        else:
            folder = f"{version_key}lineage/{item.id}/"
        item.key = folder if item.is_dir else folder + _basename(item.source)


def published_manifest(item: Item, urls: dict[str, str], by_path: dict[str, str]) -> dict[str, Any]:
    """``item``'s manifest pointing at the published copies (identity unchanged)."""
    manifest = dict(item.manifest)
    manifest["path"] = urls[item.id].rstrip("/")
    manifest.setdefault("published_from", item.manifest.get("path"))
    parents = []
    for ref in item.manifest.get("parents") or []:
        ref = dict(ref)
        if ref.get("id") in urls:
            ref["path"] = urls[ref["id"]].rstrip("/")
        parents.append(ref)
    manifest["parents"] = parents
    checkpoints = manifest.get("checkpoints")
    if isinstance(checkpoints, dict):
        manifest["checkpoints"] = {
            name: by_path.get(os.path.basename(str(p)), p) if p else p
            for name, p in checkpoints.items()
        }
    return manifest


def _license(manifest: dict[str, Any], recipe: dict[str, Any] | None) -> str:
    """The licence a manifest (or, for the run's own weights, its recipe's model block)
    declares, else ``unknown``: never guessed."""
    for key in ("license", "licence"):
        if isinstance(manifest.get(key), str) and manifest[key].strip():
            return str(manifest[key]).strip()
    model = (recipe or {}).get("model") or {}
    for key in ("license", "licence"):
        if isinstance(model.get(key), str) and model[key].strip():
            return str(model[key]).strip()
    return UNKNOWN


def artifact_entry(item: Item, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The project manifest's entry of one artifact."""
    manifest = item.manifest
    own_run = not item.ancestor and manifest.get("kind") != "dataset"
    return {
        "key": item.manifest_key if item.is_dir else item.key,
        "id": item.id,
        "kind": manifest.get("kind"),
        "size": manifest.get("size"),
        "sha256": manifest.get("sha256"),
        "parents": [ref["id"] for ref in manifest.get("parents") or [] if ref.get("id")],
        "unresolved_parents": item.unresolved,
        "metrics": manifest.get("metrics") or {},
        "recipe_sha256": manifest.get("recipe_sha256"),
        "created": manifest.get("created"),
        "license": _license(manifest, recipe if own_run else None),
    }


def primary_artifact(items: Iterable[Item]) -> Item | None:
    """The version's model: ``best.ckpt``, else ``last.ckpt``, else the first checkpoint."""
    checkpoints = [i for i in items if i.manifest.get("kind") == "checkpoint" and not i.ancestor]
    for name in RUN_CHECKPOINTS:
        for item in checkpoints:
            if item.key.endswith("/" + name):
                return item
    return checkpoints[0] if checkpoints else None


# ----------------------------------------------------------------------------- project manifest


def read_project(prefix: str) -> dict[str, Any]:
    """The project manifest under ``prefix`` as stored now (an empty project if none)."""
    url = f"{prefix}/{PROJECT_MANIFEST}"
    fs, inner = storage.filesystem(url)
    fs.invalidate_cache(os.path.dirname(inner))  # listings cached by this process may be old
    if not storage.exists(url):
        return {"format": PROJECT_FORMAT, "models": {}, "artifacts": []}
    try:
        data: dict[str, Any] = json.loads(storage.read_text(url))
    except json.JSONDecodeError as err:
        raise PublishError(f"{url}: invalid JSON ({err}); fix or remove it") from None
    if data.get("format") != PROJECT_FORMAT:
        raise PublishError(f"{url}: format {data.get('format')!r}, expected {PROJECT_FORMAT!r}")
    return data


def choose_version(project: dict[str, Any], name: str, ids: list[str]) -> str:
    """The version that already holds these artifacts (by id) under ``name``, else the next
    integer."""
    versions = project["models"].get(name, {})
    for version, entry in versions.items():
        if entry.get("artifacts") == ids:
            return str(version)
    numbers = [int(v) for v in versions if str(v).isdigit()]
    return str(max(numbers, default=0) + 1)


def check_immutable(
    project: dict[str, Any], entries: list[dict[str, Any]], version_key: str
) -> None:
    """Refuse to change what an earlier publish put under the same keys."""
    existing = {a["key"]: a for a in project["artifacts"]}
    ours = {e["key"] for e in entries}
    for entry in entries:
        old = existing.get(entry["key"])
        if old is not None and (old["id"], old["sha256"]) != (entry["id"], entry["sha256"]):
            raise PublishError(
                f"{entry['key']}: already published as {old['kind']} {old['id']}; versions are "
                "immutable: publish under another --version"
            )
    stale = sorted(k for k in existing if k.startswith(version_key) and k not in ours)
    if stale:
        raise PublishError(
            f"{version_key}: already holds other artifacts ({', '.join(stale[:3])}); versions "
            "are immutable: publish under another --version"
        )


def merged_project(
    project: dict[str, Any],
    prefix: str,
    name: str,
    version: str,
    entries: list[dict[str, Any]],
    version_entry: dict[str, Any],
) -> dict[str, Any]:
    artifacts = {a["key"]: a for a in project["artifacts"]}
    artifacts.update({e["key"]: e for e in entries})
    models = {n: dict(v) for n, v in project["models"].items()}
    models.setdefault(name, {})[version] = version_entry
    return {
        "format": PROJECT_FORMAT,
        "prefix": prefix,
        "models": {n: dict(sorted(v.items())) for n, v in sorted(models.items())},
        "artifacts": [artifacts[k] for k in sorted(artifacts)],
    }


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# ----------------------------------------------------------------------------- staging


def _write_staged(target: Path, data: bytes) -> None:
    """Write a generated file into the staging tree with an mtime derived from its content.

    Staged files are made afresh by every publish; the sync trusts a recorded hash while a
    file's size and mtime are unchanged, so an mtime that changes exactly when the content
    does keeps a repeated publish from re-hashing or re-recording anything.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    stamp = int(hashlib.sha256(data).hexdigest()[:15], 16)  # < 2**60 ns: before 2007
    os.utime(target, ns=(stamp, stamp))


def _stage_file(source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if storage.is_remote(source):
        fs, inner = storage.filesystem(source)
        with storage.backend_errors(source):
            fs.get_file(inner, str(target))
    else:
        target.symlink_to(Path(source).resolve())


def _upload(staging: Path, url: str, report: PublishReport, progress: bool) -> None:
    result: SyncReport = sync(staging, url, progress=progress)
    if not result.ok:
        failed = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items()))
        raise PublishError(f"publishing to {url} failed for {len(result.failed)} files: {failed}")
    base = url.removeprefix(report.prefix).strip("/")
    report.uploaded += [f"{base}/{k}" if base else k for k in result.transferred]
    report.skipped += result.skipped


# ----------------------------------------------------------------------------- publish


def publish(
    sources: Sequence[str | os.PathLike[str]],
    to: str,
    name: str,
    version: str | None = None,
    *,
    model_package_group: str | None = None,
    inference_image: str | None = None,
    lifecycle: LifecyclePlan | None = None,
    all_checkpoints: bool = False,
    progress: bool = True,
) -> PublishReport:
    """Publish a run (folder or id) and/or artifacts as ``models/<name>/<version>/`` under the
    ``to`` prefix, with their lineage, and the project manifest; see the module docstring.

    ``version`` defaults to the version this run already has, else the next integer.
    ``model_package_group`` registers the version's model in that SageMaker Model Package Group
    (created if missing); ``lifecycle`` (a :class:`~visionforge_aws.publish_aws.LifecyclePlan`)
    merges lifecycle rules into the bucket's. Raises :class:`PublishError`.
    """
    prefix = to.rstrip("/")
    if not prefix.startswith("s3://") or len(prefix) <= len("s3://"):
        raise PublishError(f"--to {to}: must be an s3://bucket/prefix URL")
    for label, value in (("--name", name), ("--version", version)):
        if value is not None and not _NAME.match(value):
            raise PublishError(f"{label} {value!r}: use letters, digits, '.', '_' and '-'")
    if not sources:
        raise PublishError("nothing to publish: name a run folder, run id or artifacts")
    with tempfile.TemporaryDirectory(prefix="visionforge-publish-") as tmp:
        work = Path(tmp)
        run, items, extra = collect(
            [os.fspath(s) for s in sources], work, all_checkpoints=all_checkpoints
        )
        if run is None and not items:
            raise PublishError("nothing to publish: no artifact with a manifest found")
        project = read_project(prefix)
        run_id = run.id if run is not None else None
        owned = ([run] if run is not None else []) + items
        owned_ids = sorted(item.id for item in owned)
        version = version or choose_version(project, name, owned_ids)
        report = PublishReport(prefix, name, version)
        version_key = f"models/{name}/{version}/"
        ancestors = add_ancestors(owned)
        assign_keys(run, items, ancestors, version_key)
        everything = owned + ancestors
        urls = {item.id: f"{prefix}/{item.key}" for item in everything}
        by_name = {_basename(i.source): urls[i.id] for i in items}
        recipe = _read_recipe(run)
        entries = [artifact_entry(item, recipe) for item in everything]
        check_immutable(project, entries, version_key)
        for item in everything:
            for parent in item.unresolved:
                report.warnings.append(
                    f"{item.key or item.source}: parent {parent['path']} not published "
                    f"({parent['reason']})"
                )
        primary = primary_artifact(items)
        metrics = (primary or run or items[0]).manifest.get("metrics") or {}
        staging = work / "stage"
        for item in everything:
            if not item.is_dir:
                _stage_file(item.source, staging / item.key)
            manifest = published_manifest(item, urls, by_name)
            _write_staged(staging / item.manifest_key, _dump(manifest))
        for path, key in extra:
            _stage_file(str(path), staging / version_key / key)
        metrics_key = version_key + "metrics.json"
        _write_staged(
            staging / metrics_key,
            _dump({"artifact": primary.id if primary else None, "metrics": metrics}),
        )
        _upload(staging, prefix, report, progress)
        report.artifacts = sorted(e["key"] for e in entries)

        version_entry: dict[str, Any] = {
            "run": run_id,
            "model": primary.id if primary else None,
            "metrics": metrics,
            "cost": run.manifest.get("cost") if run is not None else None,
            "artifacts": owned_ids,
        }
        if model_package_group:
            arn, created = publish_aws.register_model_package(
                model_package_group,
                project=prefix,
                name=name,
                version=version,
                model_url=f"{prefix}/{version_key}",
                metrics_url=f"{prefix}/{metrics_key}",
                model_id=primary.id if primary else _first_id(items),
                image=inference_image,
            )
            report.model_package_arn, report.model_package_created = arn, created
            version_entry["model_package"] = {"group": model_package_group, "arn": arn}
        elif name in project["models"] and version in project["models"][name]:
            earlier = project["models"][name][version].get("model_package")
            if earlier:
                version_entry["model_package"] = earlier
        if lifecycle is not None:
            report.lifecycle_changed = publish_aws.apply_lifecycle(lifecycle)

        merged = merged_project(project, prefix, name, version, entries, version_entry)
        meta = work / "meta"
        _write_staged(meta / os.path.basename(PROJECT_MANIFEST), _dump(merged))
        _upload(meta, f"{prefix}/{os.path.dirname(PROJECT_MANIFEST)}", report, progress)
    return report


def _first_id(items: list[Item]) -> str | None:
    return items[0].id if items else None


def _read_recipe(run: Item | None) -> dict[str, Any] | None:
    if run is None:
        return None
    path = Path(run.source) / "recipe.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


__all__ = ["PROJECT_MANIFEST", "PublishError", "PublishReport", "publish"]
