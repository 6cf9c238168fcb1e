"""visionforge-dino: DETR and DINO detectors with compiled multi-scale deformable attention for visionforge."""

__version__ = "0.1.0"
