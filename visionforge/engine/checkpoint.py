"""Checkpoint files: writing, safe loading (``weights_only=True``) and building models from them."""

from __future__ import annotations

import io
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionforge import storage
from visionforge.config import Recipe
from visionforge.engine.label_space import LabelSpace, adopt_label_space
from visionforge.errors import CheckpointError, StorageError
from visionforge.interfaces import CategoryMapped
from visionforge.registry import REGISTRIES

CHECKPOINT_FORMAT = "visionforge.checkpoint/1"


def rng_state() -> dict[str, Any]:
    """python, numpy, torch and CUDA RNG states as tensors/lists (``weights_only`` safe)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nested state (what ``torch.save`` mostly writes)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(state: Mapping[str, Any], path: str) -> None:
    """Write ``state`` to a local ``path`` atomically (temporary file, fsync, rename).

    Its size is checked against the free space first; a full device is a StorageError
    naming the file, what it needed and had, and the previous checkpoint stays whole."""
    needed = tensor_bytes(state) + (64 << 10)  # tensors plus the pickle and zip records
    with storage.atomic_local_path(path, needed=needed) as tmp, open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())


def _source(path: str) -> Path | io.BytesIO:
    """A local checkpoint's path, or a URL's bytes (read into memory, nothing left behind)."""
    if storage.is_remote(path):
        try:
            return io.BytesIO(storage.read_bytes(path))
        except StorageError:
            raise CheckpointError(f"{path}: checkpoint not found") from None
    local = Path(path.removeprefix("file://"))
    if not local.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not local.is_file():
        raise CheckpointError(f"{path}: not a checkpoint file (a directory?)")
    return local


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load a visionforge checkpoint (local path or URL) with ``weights_only=True``."""
    try:
        ckpt = torch.load(_source(path), map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
    ) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({reason}); is the file complete and written by "
            "torch.save?"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a visionforge checkpoint (no 'format': {CHECKPOINT_FORMAT!r}); "
            "plain weights go in model.pretrained_path"
        )
    return ckpt


def _preview(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_strict(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    """Load ``state_dict`` strictly; mismatches raise CheckpointError naming a few keys."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    shapes = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_preview(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (checkpoint vs model): {_preview(shapes, 2)}")
        raise CheckpointError(
            f"{source}: checkpoint does not fit the model ({'; '.join(parts)}); it was trained "
            "with another model block: use that recipe, or the checkpoint path alone"
        )
    model.load_state_dict(state_dict, strict=True)


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model, built through the registry."""
    model: nn.Module = REGISTRIES.models.build(recipe.model.as_dict(), "model")
    return model


def load_model(
    source: Recipe | str, checkpoint: str | None = None, *, use_ema: bool = True
) -> tuple[nn.Module, Recipe]:
    """Build a model from a recipe or a checkpoint (whose recipe it holds) and load weights.

    ``use_ema`` prefers the EMA weights when the checkpoint has them. The model is returned
    in eval mode, with ``class_names`` set when the checkpoint knows them.
    """
    ckpt: dict[str, Any] | None = None
    if isinstance(source, Recipe):
        recipe = source
        if checkpoint is not None:
            ckpt = load_checkpoint(checkpoint)
    else:
        checkpoint = checkpoint or source
        ckpt = load_checkpoint(checkpoint)
        try:
            recipe = Recipe.model_validate(ckpt["recipe"])
        except Exception as err:
            raise CheckpointError(f"{checkpoint}: stored recipe is invalid: {err}") from None
    model = build_model(recipe)
    if ckpt is not None and checkpoint is not None:
        weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
        load_state_strict(model, weights, checkpoint)
        names, ids = ckpt.get("class_names"), ckpt.get("category_ids")
        if isinstance(model, CategoryMapped):
            # the training data's label space, unless the model declares its own
            if ids is not None and names is not None:
                adopt_label_space(model, LabelSpace(list(ids), list(names)))
        else:
            if names is not None:
                setattr(model, "class_names", list(names))  # noqa: B010
            if ids is not None:
                setattr(model, "category_ids", list(ids))  # noqa: B010
    model.eval()
    return model, recipe
