"""Runners: where a recipe runs (``local`` is core; plugins add remote ones)."""

from __future__ import annotations

from visionforge.errors import VisionforgeError


class RunFailedError(VisionforgeError):
    """A run started but did not finish successfully (the CLI exits with code 1)."""

    exit_code = 1


__all__ = ["RunFailedError"]
