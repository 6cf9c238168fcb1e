"""Generic data pieces: transform presets, device-side normalization and collate functions."""

from visionforge.data.collate import collate_with_lists, detection_collate
from visionforge.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    classification_transforms,
    device_normalize,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "classification_transforms",
    "collate_with_lists",
    "detection_collate",
    "device_normalize",
]
