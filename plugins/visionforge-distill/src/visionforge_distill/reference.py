"""The reference database a device searches: embeddings, labels, index and manifest.

``build_reference(model, images, out)`` embeds one clean view of every image under a
class-folder root with a checkpoint or an ONNX file and writes ``out/``: ``embeddings.npy``
(unit float32), ``labels.npy``, ``classes.json``, ``files.json``, the backend's index file and
``manifest.json`` (lineage: the model is its parent). ``query_reference`` searches it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from visionforge import lineage
from visionforge.components.datasets import ImageFolder
from visionforge.engine import load_model
from visionforge.errors import ConfigError
from visionforge.export.onnx import export_network
from visionforge_distill.configs import IMAGENET_MEAN, IMAGENET_STD
from visionforge_distill.data import clean_transform
from visionforge_distill.index import CosineIndex, normalize

DEFAULT_IMAGE_SIZE = 224


@dataclass
class Embedder:
    """Image tensors -> embeddings with a checkpoint (student) or an ONNX file."""

    source: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    _run: Any

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return np.asarray(self._run(images), dtype=np.float32)

    def transform(self, image: torch.Tensor) -> torch.Tensor:
        return clean_transform(self.image_size, self.mean, self.std)(image)


def load_embedder(source: str, image_size: int | None = None) -> Embedder:
    """An :class:`Embedder` for a ``.onnx`` file or a visionforge checkpoint."""
    if source.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        shape = feed.shape
        size = image_size or (shape[-1] if isinstance(shape[-1], int) else DEFAULT_IMAGE_SIZE)

        def run_onnx(images: torch.Tensor) -> np.ndarray:
            return np.asarray(session.run(None, {feed.name: images.numpy()})[0])

        return Embedder(source, size, IMAGENET_MEAN, IMAGENET_STD, run_onnx)
    model, recipe = load_model(source)
    network = export_network(model)
    network.eval()
    train = recipe.data.train.fields()
    size = image_size or int(train.get("image_size", DEFAULT_IMAGE_SIZE))
    mean = tuple(train.get("mean", IMAGENET_MEAN))
    std = tuple(train.get("std", IMAGENET_STD))

    @torch.no_grad()
    def run_torch(images: torch.Tensor) -> np.ndarray:
        out = network(images)
        if isinstance(out, dict):
            out = out["embedding"]
        return out.float().numpy()

    return Embedder(source, size, mean, std, run_torch)


def embed_images(embedder: Embedder, images: ImageFolder, batch_size: int = 32) -> np.ndarray:
    """``[N, D]`` embeddings of one clean view of every image."""
    chunks = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=None):
        stop = min(start + batch_size, len(images))
        batch = torch.stack(
            [embedder.transform(images.load_image(i)) for i in range(start, stop)]
        ).as_subclass(torch.Tensor)
        chunks.append(embedder(batch))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def build_reference(
    model: str,
    images_root: str,
    out: str,
    *,
    backend: str = "auto",
    approximate: bool = False,
    image_size: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Write the reference database of ``images_root`` embedded by ``model`` into ``out``."""
    embedder = load_embedder(model, image_size)
    images = ImageFolder(images_root)
    embeddings = normalize(embed_images(embedder, images, batch_size))
    index = CosineIndex(embeddings, backend, approximate)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", embeddings)
    np.save(folder / "labels.npy", np.asarray(images.labels, dtype=np.int64))
    (folder / "classes.json").write_text(json.dumps(images.class_names))
    (folder / "files.json").write_text(json.dumps([p for p, _ in images.samples]))
    index_file = index.save(folder)
    return lineage.write_manifest(
        os.fspath(folder),
        "reference_index",
        parents=[model],
        extra={
            "model": model,
            "images": images_root,
            "count": len(embeddings),
            "dim": int(embeddings.shape[1]),
            "backend": index.backend,
            "approximate": approximate,
            "index_file": index_file,
            "image_size": embedder.image_size,
            "mean": list(embedder.mean),
            "std": list(embedder.std),
        },
    )


@dataclass
class Match:
    """One neighbour of a query image."""

    class_name: str
    score: float
    file: str


def query_reference(
    reference: str, image_paths: list[str], *, k: int = 5, model: str | None = None
) -> list[list[Match]]:
    """The ``k`` nearest reference images of each query image (best first)."""
    folder = Path(reference)
    manifest = lineage.read_manifest(os.fspath(folder))
    if manifest.get("kind") != "reference_index":
        raise ConfigError(f"{reference}: not a reference index (manifest kind {manifest['kind']})")
    embedder = load_embedder(model or manifest["model"], manifest["image_size"])
    gallery = np.load(folder / "embeddings.npy")
    index = CosineIndex.load(folder, gallery, manifest["backend"], manifest["approximate"])
    classes = json.loads((folder / "classes.json").read_text())
    files = json.loads((folder / "files.json").read_text())
    labels = np.load(folder / "labels.npy")
    from torchvision.io import ImageReadMode, decode_image

    batch = torch.stack(
        [embedder.transform(decode_image(p, mode=ImageReadMode.RGB)) for p in image_paths]
    ).as_subclass(torch.Tensor)
    scores, ids = index.search(embedder(batch), k)
    return [
        [
            Match(classes[int(labels[i])], float(s), files[int(i)])
            for s, i in zip(row_s, row_i, strict=True)
        ]
        for row_s, row_i in zip(scores, ids, strict=True)
    ]
