"""Torch-free config classes of the resnet plugin's components."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from visionforge.components.configs import ImageFolderConfig
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


class ImageNetFolderConfig(ImageFolderConfig):
    """``image_folder`` with the ImageNet augmentation spelled out and a choice of decoder."""

    decoder: Literal["reduced", "full", "nvjpeg"] = Field(
        "reduced",
        description=(
            "torch backend's decoder. reduced: JPEGs decoded by libjpeg-turbo (simplejpeg) at "
            "the largest DCT reduction that still covers the crop/resize; full: torchvision "
            "decode_image of every pixel, then transforms v2 (the core image_folder pipeline); "
            "nvjpeg: workers only read files and draw crops, the CUDA training device decodes "
            "the batch (torchvision decode_jpeg) and crops, resizes, flips there (reduced "
            "without CUDA). data.loader.backend: dali replaces all three"
        ),
    )
    scale: tuple[float, float] = Field(
        (0.08, 1.0), description="train: RandomResizedCrop area fraction range"
    )
    ratio: tuple[float, float] = Field(
        (3 / 4, 4 / 3), description="train: RandomResizedCrop aspect ratio range"
    )
    interpolation: Literal["bilinear", "bicubic"] = Field(
        "bilinear", description="resize interpolation (antialiased)"
    )
    flip_prob: float = Field(0.5, ge=0, le=1, description="train: horizontal flip probability")

    @model_validator(mode="after")
    def _check_ranges(self) -> ImageNetFolderConfig:
        for name in ("scale", "ratio"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name}: need 0 < low <= high, got ({low}, {high})")
        if self.scale[1] > 1:
            raise ValueError(
                f"scale: the upper bound is an area fraction <= 1, got {self.scale[1]}"
            )
        return self
