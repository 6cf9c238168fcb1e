"""visionforge-dino: DETR and DINO detectors with compiled multi-scale deformable attention."""

__version__ = "0.1.0"
