"""Torch-free config classes of the resnet plugin's components."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from visionforge.config import ComponentConfig, InputPath


class ResNetConfig(ComponentConfig):
    """A timm ResNet (``resnet18`` .. ``resnet152``) trained from scratch by default."""

    depth: Literal[18, 34, 50, 101, 152] = Field(50, description="number of layers")
    num_classes: int = Field(1000, ge=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth")
    zero_init_last: bool = Field(True, description="zero-init the last norm of each residual block")
    pretrained_path: InputPath | None = Field(
        None, description="local path or URL of a state_dict / checkpoint to start from"
    )
