"""The run registry: one JSON record per submitted run, so ``visionforge runs`` reaches any run.

Records live in ``$VISIONFORGE_HOME/runs/<id>.json`` (default ``~/.visionforge/runs``). A
record holds the run's id, its runner block (type and fields, enough to rebuild the runner and
call :meth:`~visionforge.interfaces.Runner.attach`), the recipe's name, the output location
and a runner-specific ``state`` (a process id, a job name, the final status...). Records are
written atomically; nothing secret goes into them (runner blocks hold no credentials).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionforge import storage
from visionforge.errors import ConfigError

if TYPE_CHECKING:
    from visionforge.interfaces import RunHandle

HOME_ENV = "VISIONFORGE_HOME"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


class UnknownRunError(ConfigError):
    """No record holds the run id asked for."""


def home() -> Path:
    """visionforge's per-user folder: ``$VISIONFORGE_HOME`` or ``~/.visionforge``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".visionforge")


def runs_folder() -> Path:
    return home() / "runs"


def new_run_id(name: str) -> str:
    """A fresh id: the recipe name (letters, digits, dashes), a UTC timestamp, 4 random hex.

    At most 63 characters, a valid SageMaker job name and EC2 tag value.
    """
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:36] or "run"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


@dataclass
class RunRecord:
    """What the registry keeps about one run."""

    id: str
    runner: dict[str, Any]
    recipe: str
    output: str
    created: float = field(default_factory=time.time)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return record_path(self.id)

    def save(self) -> None:
        """Write the record atomically (readers see the old or the new one)."""
        data = json.dumps(asdict(self), indent=2, sort_keys=True, default=str)
        storage.write_bytes_atomic(self.path, data.encode())

    def update(self, **state: Any) -> None:
        """Merge ``state`` into the record's state and save it."""
        self.state.update(state)
        self.save()

    def reload(self) -> RunRecord:
        return load(self.id)


def record_path(run_id: str) -> Path:
    if not _ID.match(run_id):
        raise UnknownRunError(
            f"run id {run_id!r}: not a run id (letters, digits and dashes); "
            "list runs with: visionforge runs list"
        )
    return runs_folder() / f"{run_id}.json"


def load(run_id: str) -> RunRecord:
    """The record of ``run_id``; an unknown id names the registry folder and how to list runs."""
    path = record_path(run_id)
    if not path.exists():
        raise UnknownRunError(
            f"run {run_id}: no record in {runs_folder()}; list runs with: visionforge runs list"
        )
    data = json.loads(path.read_text())
    return RunRecord(**data)


def all_records() -> list[RunRecord]:
    """Every recorded run, newest first (unreadable records are skipped with a warning)."""
    import warnings

    records = []
    folder = runs_folder()
    for path in folder.glob("*.json") if folder.exists() else ():
        try:
            records.append(RunRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError) as err:
            warnings.warn(f"{path}: unreadable run record ({err}); delete it", stacklevel=2)
    return sorted(records, key=lambda r: r.created, reverse=True)


def attach(run_id: str) -> RunHandle:
    """A handle on ``run_id``, from the runner named in its record."""
    from visionforge.registry import REGISTRIES

    record = load(run_id)
    runner = REGISTRIES.runners.build(record.runner, "runner")
    return runner.attach(run_id)


__all__ = [
    "HOME_ENV",
    "RunRecord",
    "UnknownRunError",
    "all_records",
    "attach",
    "home",
    "load",
    "new_run_id",
    "runs_folder",
]
