"""Exporters: turn a trained model into a deployable artifact (ONNX is core).

Importing this package is cheap; :mod:`visionforge.export.onnx` imports torch.
"""

from __future__ import annotations

from visionforge.errors import VisionforgeError


class ExportError(VisionforgeError):
    """An export failed (the model could not be exported or checked)."""


class ParityError(ExportError):
    """The exported model ran but its outputs differ from PyTorch beyond the tolerance.

    The CLI exits with code 1 ("ran but failed") for it.
    """

    exit_code = 1


__all__ = ["ExportError", "ParityError"]
