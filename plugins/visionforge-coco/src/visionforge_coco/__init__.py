"""visionforge-coco: COCO and YOLO datasets, converters, split, verify and COCO evaluation for visionforge."""

__version__ = "0.1.0"
