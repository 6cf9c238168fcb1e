"""Exception types. Every error a user can cause is a :class:`VisionforgeError` whose
message is one readable line naming the field or file at fault and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class VisionforgeError(Exception):
    """Base class for errors caused by user input (recipes, files, names).

    ``paths`` lists the dotted recipe fields at fault (``trainer.epochs``), so a caller can
    say where the value came from (the recipe file, or ``--set``). ``exit_code`` is the
    ``visionforge`` command's exit status for it (subclasses for "ran but failed" use 1).
    """

    exit_code: int = 2

    def __init__(self, *args: object, paths: Sequence[str] = ()) -> None:
        super().__init__(*args)
        self.paths = tuple(paths)


class RegistryError(VisionforgeError, LookupError):
    """A registry lookup or registration failed."""


class UnknownComponentError(RegistryError, KeyError):
    """No component of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousComponentError(RegistryError):
    """A bare name matches components of several plugins."""


class DuplicateComponentError(RegistryError):
    """A qualified name was registered twice."""


class ConfigError(VisionforgeError, ValueError):
    """A recipe or component config is invalid; the message names the dotted path."""


class PluginLoadError(VisionforgeError, ImportError):
    """A plugin failed to load (raised only with VISIONFORGE_STRICT_PLUGINS=1)."""


class CheckpointError(VisionforgeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class StorageError(VisionforgeError, OSError):
    """A path or URL cannot be read or written."""
