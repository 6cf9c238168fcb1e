"""``class_folders``: one folder per class, as few as one image each, for distillation and
retrieval evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionforge.components.datasets import ImageFolder
from visionforge.engine.data import sample_seed
from visionforge.errors import ConfigError
from visionforge_distill.configs import ClassFoldersConfig

GALLERY, QUERY = 0, 1


def clean_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Transform:
    """The whole image resized to ``size x size``, as float, normalized."""
    return v2.Compose(
        [
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def view_transform(cfg: ClassFoldersConfig) -> v2.Transform:
    """A training view: random resized crop, flip, colour jitter, rotation."""
    j = cfg.jitter
    return v2.Compose(
        [
            v2.RandomResizedCrop(cfg.image_size, scale=cfg.scale, antialias=True),
            v2.RandomHorizontalFlip(cfg.hflip),
            v2.ColorJitter(brightness=j, contrast=j, saturation=j),
            v2.RandomRotation(cfg.rotation),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(cfg.mean), list(cfg.std)),
        ]
    )


class ClassFolders(Dataset[dict[str, Any]]):
    """Images under ``root/<class>/``; items carry ``image``, ``label`` and ``index``.

    ``role: train`` items add ``view``: with ``views: K`` each item is one of K fixed views of
    its image (drawn from the per-sample RNG, rendered from a seed of ``(view_seed, index,
    view)``), so a teacher cache can hold every view; without it every epoch draws a new view
    (``view = -1``). ``role: retrieval`` items add ``role`` (0 gallery, 1 query): first one
    clean view per image (the gallery), then ``queries`` augmented views per image or the
    clean images under ``query_root``.
    """

    def __init__(self, cfg: ClassFoldersConfig) -> None:
        self.cfg = cfg
        self.images = ImageFolder(cfg.root)
        self.class_names = self.images.class_names
        self.labels = self.images.labels
        self.clean = clean_transform(cfg.image_size, cfg.mean, cfg.std)
        self.augment = view_transform(cfg)
        self.queries: ImageFolder | None = None
        self.query_labels: list[int] = []
        if cfg.role == "retrieval" and cfg.query_root is not None:
            self.queries = ImageFolder(cfg.query_root)
            known = {name: i for i, name in enumerate(self.class_names)}
            unknown = [n for n in self.queries.class_names if n not in known]
            if unknown:
                raise ConfigError(
                    f"query_root: {cfg.query_root}: class folder {unknown[0]!r} is not a class "
                    f"of root {cfg.root}; query classes must be gallery classes"
                )
            self.query_labels = [known[self.queries.class_names[i]] for i in self.queries.labels]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        n = len(self.images)
        if self.cfg.role == "train":
            return n
        return n + (len(self.query_labels) if self.queries is not None else n * self.cfg.queries)

    def _seeded_view(self, index: int, view: int, salt: int = 0) -> torch.Tensor:
        """View ``view`` of image ``index``: the same pixels whenever it is asked for."""
        image = self.images.load_image(index)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also reseed (and not restore)
            # CUDA's, and costs a stack capture per call while CUDA is uninitialized
            torch.default_generator.manual_seed(sample_seed(self.cfg.view_seed + salt, index, view))
            return self.augment(image)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.cfg
        n = len(self.images)
        if cfg.role == "train":
            if cfg.views is None:
                image, view = self.augment(self.images.load_image(index)), -1
            else:
                view = int(torch.randint(cfg.views, ()))  # the per-sample seeded RNG
                image = self._seeded_view(index, view)
            label = self.labels[index]
            return {"image": tv_tensors.Image(image), "label": label, "index": index, "view": view}
        if index < n:
            image, label, role = (
                self.clean(self.images.load_image(index)),
                self.labels[index],
                GALLERY,
            )
        elif self.queries is not None:
            q = index - n
            image, label, role = self.clean(self.queries.load_image(q)), self.query_labels[q], QUERY
        else:
            source, view = divmod(index - n, cfg.queries)
            image = self._seeded_view(source, view, salt=1)
            label, role = self.labels[source], QUERY
        return {"image": tv_tensors.Image(image), "label": label, "index": index, "role": role}


def build_class_folders(cfg: ClassFoldersConfig) -> ClassFolders:
    """Registry builder of the ``class_folders`` dataset."""
    return ClassFolders(cfg)
