"""visionforge-coco: COCO/YOLO datasets, converters, split, verify and COCO evaluation."""

__version__ = "0.1.0"
