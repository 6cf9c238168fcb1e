"""Teacher cache: teacher embeddings per (image, view) in memory-mapped files.

Row ``index * views + view`` of ``embeddings.f32`` holds the teacher embedding of that view
(``dim`` float32: 3 KB at 768). ``filled.u8`` marks rows computed, ``fingerprint.f64`` holds a
fingerprint of the view's pixels, checked on every hit: a view that renders differently (other
augmentation settings, other images) is an error, never a silently stale target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionforge.errors import ConfigError
from visionforge_distill.configs import TeacherCacheConfig

INITIAL_IMAGES = 1024
FINGERPRINT_RTOL = 1e-4


class TeacherCache:
    """Looks up teacher embeddings of batch views, computing and storing the missing ones."""

    def __init__(self, cfg: TeacherCacheConfig, identity: dict[str, Any], dim: int) -> None:
        self.dir = Path(cfg.dir).expanduser()
        self.views = cfg.views
        self.dim = dim
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {"teacher": identity, "dim": dim, "views": cfg.views}
        meta_path = self.dir / "meta.json"
        if meta_path.exists():
            stored = json.loads(meta_path.read_text())
            if stored != json.loads(json.dumps(meta)):
                raise ConfigError(
                    f"teacher.cache.dir: {self.dir} holds embeddings of another teacher or view "
                    "count; delete it or choose another dir"
                )
        else:
            meta_path.write_text(json.dumps(meta, indent=2))
        self.rows = 0
        self._open(max(self._stored_rows(), INITIAL_IMAGES * self.views))
        self._weights: dict[tuple[int, torch.device], torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def _stored_rows(self) -> int:
        path = self.dir / "filled.u8"
        return path.stat().st_size if path.exists() else 0

    def _open(self, rows: int) -> None:
        """(Re)open the memory maps with room for ``rows`` rows (files grow, never shrink)."""
        specs = {"embeddings.f32": (np.float32, self.dim), "filled.u8": (np.uint8, 1)}
        specs["fingerprint.f64"] = (np.float64, 1)
        for name, (dtype, width) in specs.items():
            path = self.dir / name
            size = rows * width * np.dtype(dtype).itemsize
            with open(path, "ab") as f:
                if f.tell() < size:
                    f.truncate(size)
        self.embeddings = np.memmap(
            self.dir / "embeddings.f32", np.float32, "r+", shape=(rows, self.dim)
        )
        self.filled = np.memmap(self.dir / "filled.u8", np.uint8, "r+", shape=(rows,))
        self.fingerprints = np.memmap(self.dir / "fingerprint.f64", np.float64, "r+", shape=(rows,))
        self.rows = rows

    def fingerprint(self, images: torch.Tensor) -> np.ndarray:
        """A float64 projection of each image's pixels on a fixed random vector."""
        size = images[0].numel()
        key = (size, images.device)
        if key not in self._weights:
            gen = torch.Generator().manual_seed(size)
            self._weights[key] = torch.rand(size, generator=gen, dtype=torch.float64).to(
                images.device
            )
        flat = images.detach().reshape(len(images), -1).double()
        return (flat @ self._weights[key]).cpu().numpy()

    def keys(self, index: torch.Tensor, view: torch.Tensor) -> np.ndarray:
        views = view.cpu().numpy().astype(np.int64)
        if (views < 0).any() or (views >= self.views).any():
            raise ConfigError(
                f"teacher.cache.views: batch views {sorted(set(views.tolist()))} are not fixed "
                f"views 0..{self.views - 1}; set the train dataset's views to {self.views} "
                "(class_folders views: K draws one of K fixed views per image)"
            )
        return index.cpu().numpy().astype(np.int64) * self.views + views

    def lookup(
        self,
        index: torch.Tensor,
        view: torch.Tensor,
        images: torch.Tensor,
        embed: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Embeddings ``[B, dim]`` (float32, on the images' device) of the batch views."""
        keys = self.keys(index, view)
        if int(keys.max()) >= self.rows:
            self._open(max(int(keys.max()) + 1, 2 * self.rows))
        prints = self.fingerprint(images)
        hit = self.filled[keys].astype(bool)
        stale = hit & ~np.isclose(self.fingerprints[keys], prints, rtol=FINGERPRINT_RTOL, atol=0)
        if stale.any():
            row = int(np.flatnonzero(stale)[0])
            raise ConfigError(
                f"teacher.cache.dir: {self.dir}: image {int(index[row])} view {int(view[row])} "
                "renders differently from when it was cached (data or augmentation changed); "
                "delete the cache or choose another dir"
            )
        out = torch.empty(len(keys), self.dim, dtype=torch.float32, device=images.device)
        if hit.any():
            out[torch.from_numpy(hit)] = torch.from_numpy(self.embeddings[keys[hit]]).to(
                images.device
            )
        miss = ~hit
        if miss.any():
            mask = torch.from_numpy(miss).to(images.device)
            computed = embed(images[mask]).float()
            out[mask] = computed
            rows = keys[miss]
            self.embeddings[rows] = computed.cpu().numpy()
            self.fingerprints[rows] = prints[miss]
            self.filled[rows] = 1
        self.hits += int(hit.sum())
        self.misses += int(miss.sum())
        return out
