"""Torch-free config classes of the coco plugin's components."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from visionforge.config import ComponentConfig, InputPath


class DetectionTransformConfig(ComponentConfig):
    """Transforms v2 preset applied to image and boxes together."""

    augment: Literal["train", "eval", "none"] = Field(
        "none",
        description="train: photometric jitter + horizontal flip + resize (multiscale: the "
        "DETR recipe); eval: resize",
    )
    image_size: int | None = Field(
        None, ge=8, description="resize to image_size x image_size (None: keep the size)"
    )
    multiscale: bool = Field(
        False,
        description="the DETR recipe instead of image_size: train = flip, then shorter side "
        "in scales, or resize to crop_scales + random crop in crop_size + shorter side in "
        "scales; eval = shorter side eval_size; the longer side never above max_side",
    )
    scales: list[int] = Field(
        list(range(480, 801, 32)), min_length=1, description="multiscale: training shorter sides"
    )
    crop_scales: list[int] = Field(
        [400, 500, 600], min_length=1, description="multiscale: shorter sides before the crop"
    )
    crop_size: tuple[int, int] = Field(
        (384, 600), description="multiscale: min and max side of the random crop in pixels"
    )
    eval_size: int = Field(800, ge=8, description="multiscale: evaluation shorter side")
    max_side: int = Field(1333, ge=8, description="multiscale: longest side after resizing")
    normalize: bool = Field(
        False, description="float in [0, 1] + ImageNet normalization (False: keep uint8)"
    )
    pad_to_multiple: int = Field(
        1, ge=1, description="collate pads a batch to its largest size rounded up to this"
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> DetectionTransformConfig:
        if self.multiscale and self.image_size is not None:
            raise ValueError("image_size and multiscale exclude each other; set one of them")
        low, high = self.crop_size
        if not 1 <= low <= high:
            raise ValueError(f"crop_size: expected 1 <= min <= max, got {self.crop_size}")
        return self


class CocoDatasetConfig(DetectionTransformConfig):
    """COCO detection: an images root and an annotations JSON (local path or fsspec URL)."""

    images: InputPath = Field(..., description="directory the file_name entries are relative to")
    annotations: InputPath = Field(..., description="COCO annotations JSON")
    masks: bool = Field(False, description="add instance masks (tv_tensors.Mask) to targets")
    skip_crowd: bool = Field(False, description="leave iscrowd=1 annotations out of targets")


class YoloDatasetConfig(DetectionTransformConfig):
    """Ultralytics layout: data.yaml beside images/<split> and labels/<split>."""

    root: InputPath = Field(..., description="YOLO root holding data.yaml")
    split: Literal["train", "val", "test"] = "train"
    tolerance: float = Field(0.01, ge=0, description="clip coordinates this far outside [0, 1]")
    strict_labels: bool = Field(
        False,
        description="an image without a label file is an error (default: a background image)",
    )


class SyntheticShapesConfig(DetectionTransformConfig):
    """Deterministic generated rectangles, ellipses and triangles of K classes (in memory)."""

    num_images: int = Field(64, ge=1)
    shape_size: int = Field(128, ge=16, description="generated image side in pixels")
    num_classes: int = Field(3, ge=1)
    min_objects: int = Field(1, ge=0)
    max_objects: int = Field(6, ge=1)
    min_size: float = Field(0.08, gt=0, le=1, description="object side / image side, minimum")
    max_size: float = Field(0.5, gt=0, le=1, description="object side / image side, maximum")
    max_overlap: float = Field(0.4, ge=0, le=1, description="max box IoU between objects")
    seed: int = 0
    masks: bool = False


class CocoEvaluatorConfig(ComponentConfig):
    """COCO metrics (12 standard + per-class AP + best F1) of ``outputs["detections"]``."""

    annotations: InputPath | None = Field(
        None,
        description="ground-truth COCO JSON; None: built from the batch targets (boxes in "
        "the original image's pixels, labels used as category ids)",
    )
    engine: Literal["faster", "pycocotools"] = "faster"
    plots: bool = Field(True, description="write_report also draws PR curves and error PNGs")


class CocoBboxEvaluatorConfig(CocoEvaluatorConfig):
    pass


class CocoSegmEvaluatorConfig(CocoEvaluatorConfig):
    pass


class Yolo2CocoConfig(ComponentConfig):
    """YOLO root -> COCO (``visionforge coco convert --from yolo --to coco``)."""

    src: str = Field(..., description="YOLO root holding data.yaml")
    dst: str
    split: str | None = Field(None, description="one split into dst; None: dst/<split>/ each")
    id_names: bool = Field(False, description="name files {image_id:06d}<ext>")
    link: Literal["copy", "hard", "sym"] = "copy"
    skip_invalid: bool = False
    tolerance: float = Field(0.01, ge=0)
    strict_labels: bool = Field(
        False,
        description="an image without a label file is an error (default: a background image)",
    )


class Coco2YoloConfig(ComponentConfig):
    """COCO -> YOLO root (``visionforge coco convert --from coco --to yolo``)."""

    src: str = Field(..., description="images directory")
    annotations: str
    dst: str
    split: Literal["train", "val", "test"] = "train"
    link: Literal["copy", "hard", "sym"] = "copy"
    rows: Literal["auto", "box", "polygon"] = "auto"
    crowd: Literal["keep", "box"] = "keep"
    skip_invalid: bool = False
