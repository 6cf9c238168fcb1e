"""A minimal visionforge plugin: a tiny CNN and a stripes dataset."""

__version__ = "0.1.0"
