"""The source bundle of a SageMaker run (``sourcedir.tar.gz``).

It holds the recipe as submitted (``recipe.json``), how input channels map onto recipe
fields (``entry.json``), the entry script SageMaker's PyTorch container runs
(``visionforge_entry.py``) and ``wheels/``: wheels of every installed visionforge package,
which the entry script installs with ``pip install --no-index --find-links wheels`` (never
from the public index, where an unrelated project holds the name) beside the image's torch.
No ``requirements.txt``: the container would install it from the public index.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from visionforge.errors import ConfigError

ENTRY_SCRIPT = "visionforge_entry.py"
RECIPE_FILE = "recipe.json"
ENTRY_FILE = "entry.json"

_ENTRY_SOURCE = '''"""SageMaker entry of a visionforge run (generated).

Installs the bundled wheels, then hands over to `visionforge aws sagemaker-entry`.
"""

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
wheels = sorted(glob.glob(os.path.join(here, "wheels", "*.whl")))
subprocess.check_call(
    [sys.executable, "-m", "pip", "install", "--no-index", "--find-links",
     os.path.join(here, "wheels"), *wheels]
)
os.execv(sys.executable, [sys.executable, "-m", "visionforge.cli", "aws", "sagemaker-entry",
                          "--bundle", here])
'''


def visionforge_distributions() -> list[metadata.Distribution]:
    """Installed distributions named visionforge or visionforge-*, sorted by name.

    An installed record (with ``direct_url.json``) wins over build metadata of the same name
    found first on ``sys.path`` (the ``visionforge.egg-info`` a wheel build leaves in a
    checkout, seen when running from its root)."""
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name != "visionforge" and not name.startswith("visionforge-"):
            continue
        if name not in found or (
            found[name].read_text("direct_url.json") is None
            and dist.read_text("direct_url.json") is not None
        ):
            found[name] = dist
    return [found[name] for name in sorted(found)]


def _source_of(dist: metadata.Distribution) -> Path:
    """The folder or wheel file ``dist`` was installed from (PEP 610 direct_url.json)."""
    name = dist.metadata["Name"]
    raw = dist.read_text("direct_url.json")
    if raw:
        url = json.loads(raw).get("url", "")
        if url.startswith("file://"):
            path = Path(unquote(urlsplit(url).path))
            if path.exists():
                return path
    raise ConfigError(
        f"{name} {dist.version}: cannot find the folder or wheel it was installed from, so it "
        "cannot go into the SageMaker bundle; install it from a source folder or a wheel file"
    )


def build_wheels(target: Path) -> list[Path]:
    """Wheels of every installed visionforge package, in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for dist in visionforge_distributions():
        source = _source_of(dist)
        if source.suffix == ".whl":
            shutil.copy2(source, target / source.name)
            continue
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                "--wheel-dir",
                str(target),
                str(source),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ConfigError(
                f"{dist.metadata['Name']}: building its wheel from {source} failed: "
                f"{done.stderr.strip().splitlines()[-1:] or done.returncode}"
            )
    return sorted(target.glob("*.whl"))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_bundle(path: Path, recipe: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """Write ``sourcedir.tar.gz`` to ``path``; returns the member names."""
    with tempfile.TemporaryDirectory(prefix="visionforge-bundle-") as tmp:
        wheels = build_wheels(Path(tmp))
        with tarfile.open(path, "w:gz") as tar:
            _add_bytes(tar, ENTRY_SCRIPT, _ENTRY_SOURCE.encode())
            _add_bytes(tar, RECIPE_FILE, json.dumps(recipe, indent=2).encode())
            _add_bytes(tar, ENTRY_FILE, json.dumps(entry, indent=2).encode())
            for wheel in wheels:
                tar.add(wheel, arcname=f"wheels/{wheel.name}")
            return tar.getnames()


def members(path: Path) -> Iterator[str]:
    with tarfile.open(path) as tar:
        yield from tar.getnames()
