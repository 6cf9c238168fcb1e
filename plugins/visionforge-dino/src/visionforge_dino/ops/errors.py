"""Errors of the deformable-attention ops."""

from __future__ import annotations

from visionforge.errors import VisionforgeError


class MSDAInputError(VisionforgeError, ValueError):
    """The tensors given to multi-scale deformable attention do not fit together."""


class OpsBuildError(VisionforgeError, RuntimeError):
    """A compiled backend cannot be built here (the message says what is missing)."""
