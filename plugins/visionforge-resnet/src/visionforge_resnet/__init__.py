"""visionforge-resnet: ImageNet-style classification recipes (ResNet50 from scratch)."""

__version__ = "0.1.0"
