"""The recipe's input paths as a remote runner sees them (shared by the SageMaker and EC2
runners): local paths are refused, each named, unless the run uploads them; remote ones must
be s3:// URLs."""

from __future__ import annotations

import sys
from pathlib import Path

from visionforge import storage
from visionforge.config import Recipe
from visionforge.errors import ConfigError
from visionforge_aws.sync import sync


def split_inputs(
    recipe: Recipe, *, upload_local: bool, service: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(local, remote) ``(field, path)`` inputs of ``recipe``; one ConfigError names every
    local one (unless ``upload_local``) or any remote one that is not on S3."""
    local = [(f, p) for f, p in recipe.input_paths() if not storage.is_remote(p)]
    other = [(f, p) for f, p in recipe.input_paths() if storage.is_remote(p)]
    for field, url in other:
        if not url.startswith("s3://"):
            raise ConfigError(f"{field}: {url}: {service} reads inputs from s3:// only")
    if local and not upload_local:
        named = "; ".join(f"{f}: {p}" for f, p in local)
        raise ConfigError(
            f"local paths cannot be reached from {service}: {named}; put them on S3 "
            "(visionforge aws sync PATH s3://...) and use the URLs, or pass --upload-local"
        )
    return local, other


def upload_input(field: str, path: str, url: str) -> tuple[str, bool]:
    """Upload the local input ``path`` of ``field`` under ``url`` (a folder is synced to it, a
    file goes to ``url/NAME``); returns (where it went, whether it is a file)."""
    source = Path(path).expanduser()
    if not source.exists():
        raise ConfigError(f"{field}: {path} does not exist")
    if source.is_dir():
        report = sync(source, url, progress=sys.stderr.isatty())
        if not report.ok:
            raise ConfigError(f"{field}: uploading {path} failed: {report.failed}")
        return url, False
    target = f"{url}/{source.name}"
    storage.put_file(source, target)
    return target, True
