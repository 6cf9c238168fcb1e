"""Torch-free configuration of the aws plugin's components."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from visionforge.components.configs import ComponentConfig

_CHANNEL = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
_SECRET_NAMES = re.compile(r"SECRET|TOKEN|PASSWORD|ACCESS_KEY", re.IGNORECASE)


class SageMakerRunnerConfig(ComponentConfig):
    """Train on Amazon SageMaker (one CreateTrainingJob per run)."""

    role: str = Field(..., description="IAM role ARN SageMaker assumes (see docs/plugins/aws.md)")
    output: str = Field(..., description="s3:// prefix for job outputs (model.tar.gz, bundle)")
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = Field(1, ge=1)
    spot: bool = Field(False, description="managed spot training (checkpoints make it resume)")
    max_run: int = Field(24 * 3600, ge=60, description="MaxRuntimeInSeconds")
    max_wait: int | None = Field(None, description="MaxWaitTimeInSeconds (spot; >= max_run)")
    volume_gb: int = Field(50, ge=1)
    region: str | None = Field(None, description="default: the AWS configuration's region")
    image_uri: str | None = Field(None, description="default: the PyTorch training image")
    pytorch_version: str = "2.5.1"
    python_version: str = "py311"
    checkpoint: str | None = Field(
        None, description="s3:// prefix for checkpoints (default OUTPUT/RUN_ID/checkpoints)"
    )
    channels: dict[str, str] = Field(
        default_factory=dict, description="extra input channels: name -> s3:// prefix"
    )
    environment: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    upload_local: bool = Field(
        False, description="upload local input paths of the recipe (else they are refused)"
    )
    master_port: int = Field(29500, ge=1, le=65535, description="torchrun rendezvous port")
    poll_s: float = Field(30.0, gt=0, description="seconds between status polls in wait()")

    @model_validator(mode="after")
    def _check(self) -> SageMakerRunnerConfig:
        if not self.output.startswith("s3://"):
            raise ValueError(f"output: {self.output!r} must be an s3:// prefix")
        if self.checkpoint is not None and not self.checkpoint.startswith("s3://"):
            raise ValueError(f"checkpoint: {self.checkpoint!r} must be an s3:// prefix")
        if self.max_wait is not None:
            if not self.spot:
                raise ValueError("max_wait: only for spot: true (it bounds waiting for capacity)")
            if self.max_wait < self.max_run:
                raise ValueError(f"max_wait: {self.max_wait} must be >= max_run {self.max_run}")
        for name, uri in self.channels.items():
            if not _CHANNEL.match(name):
                raise ValueError(f"channels.{name}: letters, digits, '.', '-', '_' only")
            if not uri.startswith("s3://"):
                raise ValueError(f"channels.{name}: {uri!r} must be an s3:// prefix")
        for key in self.environment:
            if _SECRET_NAMES.search(key):
                raise ValueError(
                    f"environment.{key}: looks like a credential; the job gets its rights "
                    "from `role`, never from keys in its environment"
                )
        return self
