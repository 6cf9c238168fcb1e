"""Config classes: pydantic only, so registering and validating stay torch-free."""

from __future__ import annotations

from pydantic import Field

from visionforge import ComponentConfig


class TinyCNNConfig(ComponentConfig):
    """A two-layer CNN classifier."""

    num_classes: int = Field(2, ge=2)
    width: int = Field(8, ge=1)


class StripesConfig(ComponentConfig):
    """Images with horizontal (class 0) or vertical (class 1) stripes."""

    num_samples: int = Field(64, ge=1)
    image_size: int = Field(16, ge=4)
    seed: int = 0
