"""Detection datasets: ``coco``, ``yolo`` and ``synthetic_shapes``.

An item is ``{"image": tv_tensors.Image (uint8, or normalized float), "target": {"boxes":
tv_tensors.BoundingBoxes XYXY, "labels": int64 (contiguous 0..K-1), "image_id": int,
"area": float32, "iscrowd": int64, "orig_size": int64 [H, W], "masks": tv_tensors.Mask
(when asked)}}``. ``collate_fn`` pads images into a
:class:`~visionforge.interfaces.DetectionBatch` (image, padding mask, one target per
image). ``category_ids[label]`` is the original category id of a label (what the COCO
evaluator reports against).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visionforge import storage
from visionforge.data.collate import detection_collate
from visionforge.interfaces import DetectionBatch
from visionforge_coco.cocofile import contiguous_categories, load_coco, safe_relative
from visionforge_coco.configs import CocoDatasetConfig, SyntheticShapesConfig, YoloDatasetConfig
from visionforge_coco.convert import missing_label_problem
from visionforge_coco.crowd import CLASS_KEY, crowd_path, crowd_problems, read_crowd
from visionforge_coco.decode import read_image
from visionforge_coco.problems import DataFormatError, raise_first
from visionforge_coco.synthetic import ShapesSpec, generate
from visionforge_coco.transforms import detection_transforms
from visionforge_coco.yolo import (
    labels_dir_for,
    pair_images_and_labels,
    parse_label_text,
    read_data_yaml,
)

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def make_item(
    image: torch.Tensor,
    boxes_xyxy: np.ndarray,
    labels: Sequence[int],
    image_id: int,
    area: Sequence[float],
    iscrowd: Sequence[int],
    masks: np.ndarray | None = None,
) -> dict[str, Any]:
    """Build one detection item from a CHW uint8 image and per-object arrays."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    target: dict[str, Any] = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.as_tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4),
            format=tv_tensors.BoundingBoxFormat.XYXY,
            canvas_size=(height, width),
        ),
        "labels": torch.as_tensor(list(labels), dtype=torch.int64),
        "image_id": image_id,
        "area": torch.as_tensor(list(area), dtype=torch.float32),
        "iscrowd": torch.as_tensor(list(iscrowd), dtype=torch.int64),
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
    }
    if masks is not None:
        target["masks"] = tv_tensors.Mask(torch.from_numpy(masks.reshape(-1, height, width)))
    return {"image": tv_tensors.Image(image), "target": target}


def _segmentation_masks(anns: list[dict[str, Any]], height: int, width: int) -> np.ndarray:
    masks = np.zeros((len(anns), height, width), dtype=np.uint8)
    for i, ann in enumerate(anns):
        seg = ann.get("segmentation")
        if isinstance(seg, list) and seg:
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict):
            rle = (
                mask_utils.frPyObjects(seg, height, width)
                if isinstance(seg.get("counts"), list)
                else seg
            )
        else:
            x, y, w, h = ann["bbox"]
            rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], height, width)[
                0
            ]
        masks[i] = mask_utils.decode(rle)
    return masks


class DetectionDataset(Dataset[dict[str, Any]]):
    """Shared behaviour: class names, category ids, transforms and collate."""

    class_names: list[str]
    category_ids: list[int]
    transforms: Transform | None = None
    pad_to_multiple: int = 1

    def collate_fn(self, items: Sequence[dict[str, Any]]) -> DetectionBatch:
        """Pad the batch's images to their largest size (see ``detection_collate``)."""
        return detection_collate(items, pad_to_multiple=self.pad_to_multiple)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _finish(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.transforms(item) if self.transforms is not None else item


class CocoDetection(DetectionDataset):
    """COCO images + annotations; labels are category ids mapped to 0..K-1 (ascending id)."""

    def __init__(
        self,
        images: str,
        annotations: str,
        transforms: Transform | None = None,
        masks: bool = False,
        skip_crowd: bool = False,
    ) -> None:
        data = load_coco(annotations)
        self.source = annotations
        self.images_root = images
        self.category_ids, self.class_names = contiguous_categories(data)
        self.label_of = {cat: i for i, cat in enumerate(self.category_ids)}
        self.images = sorted(data["images"], key=lambda img: img["id"])
        self.anns: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        for ann in data["annotations"]:
            if not (skip_crowd and ann.get("iscrowd", 0)):
                self.anns[ann["image_id"]].append(ann)
        self.masks = masks
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = self.images[index]
        path = storage.join(self.images_root, str(safe_relative(img["file_name"])))
        image = read_image(path)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        if (width, height) != (img["width"], img["height"]):
            raise DataFormatError(
                f"{path}: decoded {width}x{height}, but {self.source} (image id {img['id']}) "
                f"says {img['width']}x{img['height']}; run `visionforge coco verify --fix`"
            )
        anns = self.anns[img["id"]]
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        item = make_item(
            image,
            boxes,
            [self.label_of[a["category_id"]] for a in anns],
            img["id"],
            [a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns],
            [a.get("iscrowd", 0) for a in anns],
            _segmentation_masks(anns, height, width) if self.masks else None,
        )
        return self._finish(item)


class YoloDetection(DetectionDataset):
    """One split of a YOLO root; image ids are 1.. in sorted path order (as ``yolo2coco``),
    category ids are class + 1. An image without a label file is a background image (an
    error with ``strict_labels``). Invalid label and crowd files raise on construction."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        transforms: Transform | None = None,
        tolerance: float = 0.01,
        strict_labels: bool = False,
    ) -> None:
        data = read_data_yaml(root)
        if split not in data.splits:
            raise DataFormatError(
                f"{data.path}: no split {split!r} (has: {', '.join(data.splits)})"
            )
        images_dir = data.splits[split]
        pairing = pair_images_and_labels(images_dir)
        if pairing.orphan_labels:
            raise DataFormatError(f"{pairing.orphan_labels[0]}: label file without an image")
        self.class_names = data.names
        self.category_ids = list(range(1, data.num_classes + 1))
        labels_dir = labels_dir_for(images_dir)
        self.crowd = read_crowd(labels_dir)
        bad_crowd = crowd_problems(
            self.crowd, crowd_path(labels_dir), data.num_classes, {p.rel for p in pairing.pairs}
        )
        raise_first(
            (p for rel in sorted(bad_crowd) for p in bad_crowd[rel]),
            "run `visionforge coco verify` for all problems",
        )
        self.items: list[tuple[Path, list[tuple[int, tuple[float, ...]]], str]] = []
        for pair in pairing.pairs:
            if pair.label is None:
                if strict_labels:
                    raise_first([missing_label_problem(pair)])
                self.items.append((pair.image, [], pair.rel))
                continue
            parsed = parse_label_text(
                pair.label.read_text(), str(pair.label), data.num_classes, tolerance
            )
            raise_first(parsed.problems, "run `visionforge coco verify` for all problems")
            rows = [(r.class_id, _normalized_box(r.kind, r.coords)) for r in parsed.rows]
            self.items.append((pair.image, rows, pair.rel))
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, rows, rel = self.items[index]
        image = read_image(path)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        scale = np.array([width, height, width, height], dtype=np.float64)
        boxes = [np.asarray(box) * scale for _, box in rows]
        labels = [cls for cls, _ in rows]
        crowd = [0] * len(rows)
        for ann in self.crowd.get(rel, []):
            x, y, w, h = ann["bbox"]
            boxes.append(np.array([x, y, x + w, y + h]))
            labels.append(ann[CLASS_KEY])
            crowd.append(1)
        stacked = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        area = (stacked[:, 2] - stacked[:, 0]) * (stacked[:, 3] - stacked[:, 1])
        return self._finish(make_item(image, stacked, labels, index + 1, area.tolist(), crowd))


def _normalized_box(kind: str, coords: tuple[float, ...]) -> tuple[float, ...]:
    """Normalized XYXY of a box row (cx cy w h) or of a polygon row's extent."""
    if kind == "box":
        cx, cy, w, h = coords
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    xs, ys = coords[0::2], coords[1::2]
    return (min(xs), min(ys), max(xs), max(ys))


class SyntheticShapes(DetectionDataset):
    """Generated shapes, created on access (image i depends only on seed and i)."""

    def __init__(
        self, spec: ShapesSpec, transforms: Transform | None = None, masks: bool = False
    ) -> None:
        self.spec = spec
        self.class_names = spec.class_names()
        self.category_ids = list(range(1, spec.num_classes + 1))
        self.transforms = transforms
        self.masks = masks

    def __len__(self) -> int:
        return self.spec.num_images

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"synthetic_shapes: index {index} out of range 0..{len(self) - 1}")
        array, objects = generate(self.spec, index)
        size = self.spec.image_size
        xywh = np.array([o.bbox for o in objects], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        masks = None
        if self.masks:
            masks = (
                np.stack(
                    [
                        mask_utils.decode(mask_utils.frPyObjects([list(o.polygon)], size, size))[
                            :, :, 0
                        ]
                        for o in objects
                    ]
                )
                if objects
                else np.zeros((0, size, size), dtype=np.uint8)
            )
        areas = [
            float(mask_utils.area(mask_utils.frPyObjects([list(o.polygon)], size, size))[0])
            for o in objects
        ]
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        item = make_item(
            image, boxes, [o.label for o in objects], index + 1, areas, [0] * len(objects), masks
        )
        return self._finish(item)


def build_coco(cfg: CocoDatasetConfig) -> CocoDetection:
    """Builder of the ``coco`` dataset."""
    dataset = CocoDetection(
        cfg.images, cfg.annotations, detection_transforms(cfg), cfg.masks, cfg.skip_crowd
    )
    dataset.pad_to_multiple = cfg.pad_to_multiple
    return dataset


def build_yolo(cfg: YoloDatasetConfig) -> YoloDetection:
    """Builder of the ``yolo`` dataset."""
    dataset = YoloDetection(
        cfg.root, cfg.split, detection_transforms(cfg), cfg.tolerance, cfg.strict_labels
    )
    dataset.pad_to_multiple = cfg.pad_to_multiple
    return dataset


def build_synthetic_shapes(cfg: SyntheticShapesConfig) -> SyntheticShapes:
    """Builder of the ``synthetic_shapes`` dataset."""
    spec = ShapesSpec(
        num_images=cfg.num_images,
        image_size=cfg.shape_size,
        num_classes=cfg.num_classes,
        min_objects=cfg.min_objects,
        max_objects=cfg.max_objects,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        max_overlap=cfg.max_overlap,
        seed=cfg.seed,
    )
    dataset = SyntheticShapes(spec, detection_transforms(cfg), cfg.masks)
    dataset.pad_to_multiple = cfg.pad_to_multiple
    return dataset
