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


DLAMI_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/"
    "latest/ami-id"
)
"""SSM public parameter holding the newest AWS Deep Learning AMI (PyTorch, Ubuntu) id."""

_S3_PREFIX = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.=/-]*)?$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]+$")
_TAG_KEY = re.compile(r"^(?!aws:)[^\s][\S ]{0,127}$")


class Ec2RunnerConfig(ComponentConfig):
    """Train on one EC2 instance (on-demand or spot) run by ``visionforge aws agent``."""

    s3_prefix: str = Field(..., description="s3:// prefix; each run lives in PREFIX/RUN_ID")
    iam_instance_profile: str = Field(
        ..., description="instance profile name or ARN: the instance's rights on S3 (see docs)"
    )
    instance_type: str = "g5.2xlarge"
    ami: str | None = Field(None, description="AMI id (default: resolved from ami_parameter)")
    ami_parameter: str = Field(
        DLAMI_PARAMETER, description="SSM parameter whose value is the default AMI id"
    )
    spot: bool = Field(False, description="a spot instance (persistent request, see docs)")
    restart_on_interruption: bool = Field(
        True,
        description="spot: EC2 stops the instance on an interruption and starts it again when "
        "capacity returns (persistent request); false: the instance is terminated",
    )
    terminate_when_done: bool = Field(True, description="the agent terminates its instance")
    key_name: str | None = Field(None, description="EC2 key pair for SSH (optional)")
    subnet_id: str | None = Field(None, description="default: the default VPC's subnet")
    security_group_ids: list[str] = Field(default_factory=list)
    volume_gb: int = Field(100, ge=8, le=16384, description="root EBS volume (gp3)")
    region: str | None = Field(None, description="default: the AWS configuration's region")
    tags: dict[str, str] = Field(default_factory=dict)
    python: str = Field(
        "/opt/pytorch/bin/python", description="the AMI's Python that has torch (DLAMI: this)"
    )
    wheels: str | None = Field(
        None,
        description="local folder of visionforge wheels to install on the instance (default: "
        "built from the installed visionforge packages)",
    )
    upload_local: bool = Field(
        False, description="upload local input paths of the recipe (else they are refused)"
    )
    upload_every_s: float = Field(60.0, gt=0, description="agent: seconds between uploads")
    poll_s: float = Field(30.0, gt=0, description="seconds between status polls in wait()")

    @model_validator(mode="after")
    def _check(self) -> Ec2RunnerConfig:
        if not _S3_PREFIX.match(self.s3_prefix):
            raise ValueError(
                f"s3_prefix: {self.s3_prefix!r} must be an s3:// prefix of letters, digits "
                "and . _ - = / (it goes into a shell script and a systemd unit)"
            )
        if not _PATH.match(self.python):
            raise ValueError(f"python: {self.python!r} must be an absolute path")
        if self.ami is not None and not re.match(r"^ami-[0-9a-f]{8,17}$", self.ami):
            raise ValueError(f"ami: {self.ami!r} is not an AMI id (ami-0123456789abcdef0)")
        if not self.ami_parameter.startswith("/"):
            raise ValueError(f"ami_parameter: {self.ami_parameter!r} must start with '/'")
        if self.restart_on_interruption is False and not self.spot:
            raise ValueError("restart_on_interruption: only for spot: true")
        for key in self.tags:
            if not _TAG_KEY.match(key) or key.startswith("visionforge:"):
                raise ValueError(
                    f"tags.{key}: 1-128 characters, not starting with 'aws:' or 'visionforge:'"
                )
        return self
