"""Problems found in a dataset: where (file, line or annotation id) and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from visionforge.errors import VisionforgeError


class DataFormatError(VisionforgeError, ValueError):
    """A dataset file is malformed; the message names the file and line or annotation id."""


@dataclass(frozen=True)
class Problem:
    """One problem: ``where`` is ``file:line`` or ``file: annotation id N``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def raise_first(problems: Iterable[Problem], hint: str = "") -> None:
    """Raise DataFormatError for the first problem, if any."""
    for problem in problems:
        suffix = f" ({hint})" if hint else ""
        raise DataFormatError(f"{problem}{suffix}")


def write_problem_report(path: str | Path, problems: Iterable[Problem], **extra: object) -> None:
    """Write ``{"problems": [{"where", "message"}, ...], **extra}`` as JSON."""
    items = [asdict(p) for p in problems]
    Path(path).write_text(json.dumps({**extra, "problems": items}, indent=2) + "\n")
