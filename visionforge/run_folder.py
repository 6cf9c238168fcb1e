"""Run folders: a new run never overwrites another one; ``--resume`` finds the one to continue.

A recipe's runs live in ``BASE``, ``BASE-2``, ``BASE-3``, ... where ``BASE`` is
``trainer.output`` (default ``runs/<name>``, the name being the recipe's ``name`` or its file's
stem). :func:`new_run_folder` picks the first free one; :func:`resume_target` turns a run
folder or a checkpoint into (folder, checkpoint). Runners that restart their own job (a
SageMaker retry, a spot instance coming back) skip both and call
``Trainer(recipe, resume=True)`` with ``trainer.output`` set to their folder: it continues from
that folder's ``last.ckpt`` when there is one, else it starts there.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from itertools import count

from visionforge import storage
from visionforge.errors import ConfigError

BEST = "best.ckpt"
LAST = "last.ckpt"
RUN_CHECKPOINTS = (BEST, LAST)
"""Where a run's model is read from, best first (``last.ckpt`` when no epoch was evaluated)."""
RUN_FILES = ("manifest.json", "recipe.json", LAST)
"""Files whose presence means a folder holds a run (written by the trainer's rank 0)."""


class RunExistsError(ConfigError):
    """A new run was asked to write into a folder that holds another run."""


def holds_run(folder: str) -> bool:
    """True if ``folder`` (a local path or URL) holds a run's files."""
    return any(storage.exists(storage.join(folder, name)) for name in RUN_FILES)


def check_new_run_folder(folder: str) -> None:
    """Raise :class:`RunExistsError` if ``folder`` already holds a run."""
    if holds_run(folder):
        raise RunExistsError(
            f"trainer.output {folder}: holds another run; continue it with --resume {folder}, "
            "overwrite it with --exist-ok, or leave trainer.output unset for a new folder"
        )


def clear_run_folder(folder: str) -> None:
    """Empty ``folder`` (a local path or URL) if it holds a run: ``--exist-ok`` overwrites
    the whole run, so no file of the old one (an exported model, a report) stays beside the
    new one looking like its output."""
    if not holds_run(folder):
        return
    fs, path = storage.filesystem(folder)
    fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)


def _numbered(base: str, number: int) -> str:
    return base if number == 1 else f"{base.rstrip('/')}-{number}"


def _is_free(folder: str) -> bool:
    """Claim ``folder`` if it is free: local folders are created (atomically), so two runs
    started at once never share one; an empty existing folder is free too."""
    if storage.is_remote(folder):
        fs, path = storage.filesystem(folder)
        return not fs.exists(path) or not fs.ls(path)
    local = folder.removeprefix("file://")
    try:
        os.makedirs(local)
        return True
    except FileExistsError:
        return os.path.isdir(local) and not os.listdir(local)


def new_run_folder(base: str) -> str:
    """The first free folder of ``base``, ``base-2``, ``base-3``, ... (created when local)."""
    for number in count(1):
        candidate = _numbered(base, number)
        if _is_free(candidate):
            return candidate
    raise AssertionError("unreachable")


def run_folders(base: str) -> list[str]:
    """Existing run folders of ``base`` (``base`` itself and ``base-N``), oldest number first."""
    text = base.rstrip("/")
    remote = storage.is_remote(text)
    parent, name = (posixpath if remote else os.path).split(text)
    fs, inner = storage.filesystem(parent or ".")
    if not fs.exists(inner):
        return []
    pattern = re.compile(rf"{re.escape(name)}(?:-(\d+))?")
    found: list[tuple[int, str]] = []
    for entry in fs.ls(inner, detail=False):
        match = pattern.fullmatch(posixpath.basename(str(entry).rstrip("/")))
        if match:
            number = int(match.group(1) or 1)
            found.append((number, _numbered(text, number)))
    return [folder for _, folder in sorted(found) if holds_run(folder)]


def latest_run_folder(base: str) -> str | None:
    """The highest-numbered run folder of ``base`` that holds a run, or None."""
    folders = run_folders(base)
    return folders[-1] if folders else None


@dataclass(frozen=True)
class ResumeTarget:
    """Where a resumed run writes (``output``) and the checkpoint it continues from."""

    output: str
    checkpoint: str


def resume_target(target: str | None, base: str) -> ResumeTarget:
    """``--resume [RUN|CKPT]``: a run folder (its ``last.ckpt``), a checkpoint file (the run
    continues in the checkpoint's folder) or, with no argument, the newest run of ``base``."""
    if target is None:
        folder = latest_run_folder(base)
        if folder is None:
            raise ConfigError(
                f"--resume: no run of this recipe under {base} (or {base}-N) to continue; "
                "start one without --resume, or pass --resume RUN_FOLDER|CHECKPOINT"
            )
        target = folder
    fs, inner = storage.filesystem(target)
    if not fs.exists(inner):
        raise ConfigError(f"--resume {target}: no such run folder or checkpoint")
    if fs.isdir(inner):
        checkpoint = storage.join(target.rstrip("/"), LAST)
        if not storage.exists(checkpoint):
            raise ConfigError(
                f"--resume {target}: the run has no {LAST} (it stopped before its first "
                "checkpoint); start a new run instead"
            )
        return ResumeTarget(output=target.rstrip("/"), checkpoint=checkpoint)
    split = posixpath.split if storage.is_remote(target) else os.path.split
    return ResumeTarget(output=split(target)[0] or ".", checkpoint=target)
