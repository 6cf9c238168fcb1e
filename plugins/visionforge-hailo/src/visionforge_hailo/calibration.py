"""The INT8 calibration set: N images drawn reproducibly from a registered dataset.

Images go through the recipe's eval transforms (the dataset block built with ``augment:
eval``), then are stored NHWC float32: in 0-255 when the normalization is folded into the
model script (the chip normalizes), else normalized exactly as the model input. The array is
written as ``.npy`` (memory-mapped while filling, so 1,024 large images never sit in memory
twice) with a lineage manifest saying where every image came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from visionforge import lineage, storage
from visionforge.errors import ConfigError, VisionforgeError
from visionforge.interfaces import NamedClasses
from visionforge.registry import REGISTRIES

if TYPE_CHECKING:
    from visionforge.config import Recipe


@dataclass
class Normalization:
    """Per-channel ``mean``/``std`` on the 0-1 scale the recipe uses (ImageNet style)."""

    mean: list[float]
    std: list[float]

    def scaled(self) -> tuple[list[float], list[float]]:
        """Mean and std on the 0-255 pixel scale (what the model script's layer takes)."""
        return [m * 255 for m in self.mean], [s * 255 for s in self.std]


@dataclass
class CalibrationSource:
    """A dataset block (eval transforms applied by the dataset) and where it came from."""

    block: dict[str, Any]
    origin: str
    normalization: Normalization | None
    folded: bool
    notes: list[str] = field(default_factory=list)


def recipe_block(recipe: Recipe) -> tuple[dict[str, Any], str]:
    """The recipe's ``data.val`` block, else ``data.train``, and its dotted path."""
    if recipe.data.val is not None:
        return recipe.data.val.as_dict(), "data.val"
    return recipe.data.train.as_dict(), "data.train"


def block_from(data: Mapping[str, Any] | str) -> tuple[dict[str, Any], str]:
    """A dataset block from ``calibration.data``: a mapping, or a YAML/JSON file holding one."""
    if not isinstance(data, str):
        return dict(data), "export.calibration.data"
    try:
        loaded = yaml.safe_load(storage.read_text(data))
    except yaml.YAMLError as err:
        raise ConfigError(f"{data}: not valid YAML/JSON ({err})") from None
    if not isinstance(loaded, dict) or "type" not in loaded:
        raise ConfigError(
            f"{data}: expected a dataset block like {{type: image_folder, root: images/}}"
        )
    return loaded, data


def eval_source(
    block: Mapping[str, Any], origin: str, recipe: Recipe | None, fold: bool
) -> CalibrationSource:
    """Set the block up for calibration: eval transforms, and uint8 output when the
    normalization is folded (the dataset's own ``mean``/``std``, or the recipe's
    ``data.normalize_on_device``, become the model script's normalization layer)."""
    fields = set(REGISTRIES.datasets.get(str(block.get("type"))).config.model_fields)
    block = dict(block)
    notes = []
    if "augment" in fields and block.get("augment", "eval") != "eval":
        notes.append(f"{origin}.augment {block['augment']!r} replaced by 'eval'")
    if "augment" in fields:
        block["augment"] = "eval"
    on_device = recipe.data.normalize_on_device if recipe is not None else None
    norm: Normalization | None = None
    if on_device is not None:
        norm = Normalization(list(on_device[0]), list(on_device[1]))
    elif "normalize" in fields:
        cfg = REGISTRIES.datasets.validate(block, origin)
        norm = Normalization(list(cfg.mean), list(cfg.std)) if cfg.normalize else None  # type: ignore[attr-defined]
    if norm is not None and "normalize" in fields:
        block["normalize"] = False  # geometric eval transforms only; normalized below or on chip
    folded = fold and norm is not None
    if fold and norm is None:
        notes.append(f"{origin}: no normalization to fold into the model script")
    return CalibrationSource(block, origin, norm, folded, notes)


def draw_indices(length: int, size: int, seed: int) -> list[int]:
    """``size`` distinct indices of ``range(length)`` (all when fewer), same for same seed."""
    if length <= size:
        return list(range(length))
    chosen = np.random.default_rng(seed).choice(length, size=size, replace=False)
    return sorted(int(i) for i in chosen)


def image_array(image: Any, source: CalibrationSource, where: str) -> np.ndarray:
    """One dataset image ``[C, H, W]`` as the calibration row ``[H, W, C]`` float32."""
    import torch

    from visionforge.data import device_normalize

    tensor = torch.as_tensor(image).as_subclass(torch.Tensor)
    if source.normalization is not None:
        if tensor.dtype != torch.uint8:
            raise ConfigError(
                f"{where}: expected uint8 images before normalization, got {tensor.dtype}; "
                "set normalize: false in the dataset block"
            )
        if source.folded:
            tensor = tensor.to(torch.float32)
        else:
            norm = source.normalization
            tensor = device_normalize(tensor.unsqueeze(0), norm.mean, norm.std)[0]
    return tensor.to(torch.float32).permute(1, 2, 0).contiguous().numpy()


def write_calibration(
    source: CalibrationSource,
    out: str,
    *,
    size: int,
    seed: int,
    input_hwc: Sequence[int],
    parents: Sequence[str] = (),
    recipe: Recipe | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw, transform and store the calibration set at ``out`` (``.npy``) with its manifest;
    return the (memory-mapped) array and the manifest."""
    try:
        dataset = REGISTRIES.datasets.build(source.block, source.origin)
    except VisionforgeError as err:
        raise ConfigError(
            f"calibration data ({source.origin}): {err}; point it at data on this machine "
            f"(--set {source.origin}.root=...) or pass --calibration DATA"
        ) from None
    indices = draw_indices(len(dataset), size, seed)
    if not indices:
        raise ConfigError(f"{source.origin}: the calibration dataset is empty")
    notes = list(source.notes)
    if len(indices) < size:
        notes.append(f"only {len(indices)} images available (asked for {size})")
    staged = f"{out}.partial.npy"
    try:
        _fill(staged, dataset, indices, source, input_hwc)
        os.replace(staged, out)
    finally:
        if os.path.exists(staged):
            os.remove(staged)
    norm = source.normalization
    manifest = lineage.write_manifest(
        out,
        "calibration",
        parents=parents,
        recipe=recipe,
        extra={
            "dataset": source.block,
            "origin": source.origin,
            "indices": indices,
            "seed": seed,
            "layout": "NHWC",
            "dtype": "float32",
            "range": "0-255" if source.folded else "model input (normalized)",
            "normalization": {"mean": norm.mean, "std": norm.std} if norm else None,
            "normalization_folded": source.folded,
            "notes": notes,
            "class_names": list(dataset.class_names) if isinstance(dataset, NamedClasses) else None,
        },
    )
    return np.load(out, mmap_mode="r"), manifest


def _fill(
    staged: str,
    dataset: Any,
    indices: Sequence[int],
    source: CalibrationSource,
    input_hwc: Sequence[int],
) -> None:
    array = np.lib.format.open_memmap(
        staged, mode="w+", dtype=np.float32, shape=(len(indices), *input_hwc)
    )
    for row, index in enumerate(tqdm(indices, desc="calibration", unit="img", disable=None)):
        where = f"{source.origin}[{index}]"
        item = image_array(dataset[index]["image"], source, where)
        if tuple(item.shape) != tuple(input_hwc):
            raise ConfigError(
                f"{where}: the eval transforms give {list(item.shape)} (HWC) but the model "
                f"takes {list(input_hwc)}; set {source.origin}.image_size to the model's size"
            )
        array[row] = item
    array.flush()


def load_npy(path: str, input_hwc: Sequence[int]) -> np.ndarray:
    """A ready calibration array ``[N, H, W, C]`` float32 from ``path``, shape checked."""
    array = np.load(path, mmap_mode="r")
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(input_hwc):
        raise ConfigError(
            f"{path}: calibration array has shape {list(array.shape)}; expected "
            f"[N, {', '.join(map(str, input_hwc))}] (NHWC)"
        )
    if array.dtype != np.float32:
        raise ConfigError(f"{path}: calibration array is {array.dtype}; save it as float32")
    return array
