"""Which loader an ``imagenet_folder`` dataset gets, and the fallback when it cannot run.

``data.loader.backend: dali`` needs NVIDIA DALI (the ``dali`` extra: ``nvidia-dali-cuda130``);
``decoder: nvjpeg`` needs a CUDA training device. When either is missing,
``data.loader.backend_fallback: warn`` (default) gives one warning naming what is missing
and how to get it, then the torch DataLoader with ``decoder: reduced`` runs (the same crops
and flips; pixels differ slightly, see docs/plugins/resnet.md); ``error`` stops with that
line instead.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from typing import Any

import torch

from visionforge.config import LoaderConfig
from visionforge.engine.data import SeededDataset, default_num_workers
from visionforge.errors import ConfigError
from visionforge.interfaces import BatchLoader

DALI_INSTALL = "pip install nvidia-dali-cuda130 (the dali extra of visionforge-resnet)"


def dali_missing() -> str | None:
    """Why DALI cannot be used here, or None when ``nvidia.dali`` imports."""
    try:
        importlib.import_module("nvidia.dali")
    except ImportError as err:
        return f"NVIDIA DALI is not installed ({err}); install it with: {DALI_INSTALL}"
    return None


def nvjpeg_missing(device: torch.device) -> str | None:
    """Why ``decoder: nvjpeg`` cannot run on ``device``, or None."""
    if device.type != "cuda":
        return (
            f"decoding on the device needs a CUDA training device, this run trains on "
            f"{device.type} (torch.cuda.is_available() = {torch.cuda.is_available()}); "
            "run it on a GPU machine with a CUDA build of torch and torchvision"
        )
    return None


def fall_back(cfg: LoaderConfig, message: str) -> None:
    """One warning (``backend_fallback: warn``) or a ConfigError (``error``)."""
    if cfg.backend_fallback == "error":
        raise ConfigError(f"{message} (data.loader.backend_fallback: error)")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def build_loader(
    folder: Any,
    seeded: Any,
    sampler: Any,
    batch_size: int,
    cfg: LoaderConfig,
    seed: int,
    *,
    pin_memory: bool,
    device: torch.device,
) -> BatchLoader | None:
    """The loader of ``folder`` (an ``ImageNetFolder``) for ``cfg``, None for the standard
    torch DataLoader."""
    if not isinstance(seeded, SeededDataset):
        seeded = SeededDataset(folder, seed)
    if cfg.backend == "dali":
        missing = dali_missing()
        if missing is None:
            from visionforge_resnet.dali_loader import DaliLoader

            threads = cfg.num_workers if cfg.num_workers is not None else default_num_workers()
            make = functools.partial(
                DaliLoader, seeded, sampler, batch_size, threads=threads, pin_memory=pin_memory
            )
            try:
                return make(device=device)
            except RuntimeError as err:
                if device.type != "cuda":
                    raise
                first = next((line for line in str(err).splitlines() if line.strip()), "")
                fall_back(
                    cfg,
                    f"data.loader.backend: dali: the mixed (nvJPEG) decoder does not start on "
                    f"{device} ({first.strip()}); check the NVIDIA driver against the CUDA "
                    "version of the DALI wheel; decoding with DALI on the CPU",
                )
                return make(device=torch.device("cpu"))
        fall_back(cfg, f"data.loader.backend: dali: {missing}; using backend: torch")
    if folder.config.decoder == "nvjpeg":
        missing = nvjpeg_missing(device)
        if missing is None:
            from visionforge_resnet.device_decode import DeviceDecodeLoader

            return DeviceDecodeLoader(seeded, sampler, batch_size, cfg, seed, device=device)
        fall_back(cfg, f"{folder.root}: decoder: nvjpeg: {missing}; decoding with: reduced")
    return None
