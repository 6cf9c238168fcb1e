"""visionforge on AWS: S3 sync and the SageMaker runner."""

from __future__ import annotations

__version__ = "0.1.0"
