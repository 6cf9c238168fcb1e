"""The AWS control-plane side of publishing: the SageMaker model registry and S3 lifecycle rules.

Both are idempotent. A model package is found by the project, name and version recorded in
its ``CustomerMetadataProperties`` before one is created (and CreateModelPackage carries a
ClientToken derived from them). Lifecycle rules are merged into the bucket's by rule ID:
other rules stay, ours are replaced, and nothing is written when the result is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from visionforge.errors import ConfigError, StorageError

PROJECT_KEY = "visionforge:project"
NAME_KEY = "visionforge:name"
VERSION_KEY = "visionforge:version"
MODEL_KEY = "visionforge:model-id"
ABORT_RULE_ID = "visionforge-abort-incomplete-multipart"
STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR")


def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """An AWS service or client error as one line naming what was being done."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        raise StorageError(
            f"{what}: {error.get('Code', 'error')}: {error.get('Message', err)}"
        ) from None
    except BotoCoreError as err:
        raise StorageError(f"{what}: {err}") from None


def default_inference_image(region: str) -> str:
    """The AWS Deep Learning Container for PyTorch inference (CPU) in ``region``."""
    from visionforge_aws.configs import SageMakerRunnerConfig
    from visionforge_aws.sagemaker import DLC_ACCOUNT

    fields = SageMakerRunnerConfig.model_fields
    torch_version = fields["pytorch_version"].default
    python = fields["python_version"].default
    return (
        f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-inference:"
        f"{torch_version}-cpu-{python}"
    )


def _ensure_group(client: Any, group: str) -> None:
    try:
        client.describe_model_package_group(ModelPackageGroupName=group)
    except Exception as err:
        if _error_code(err) not in ("ValidationException", "ResourceNotFound"):
            raise
        client.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription="visionforge models (visionforge aws publish)",
        )


def _existing_package(client: Any, group: str, identity: dict[str, str]) -> str | None:
    pages = client.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group)
    for page in pages:
        for summary in page.get("ModelPackageSummaryList", []):
            arn = summary["ModelPackageArn"]
            described = client.describe_model_package(ModelPackageName=arn)
            properties = described.get("CustomerMetadataProperties") or {}
            if all(properties.get(k) == v for k, v in identity.items()):
                return str(arn)
    return None


def model_package_request(
    group: str,
    *,
    project: str,
    name: str,
    version: str,
    model_url: str,
    metrics_url: str,
    model_id: str | None,
    image: str,
) -> dict[str, Any]:
    """The CreateModelPackage request of one published version (model data: the version
    folder, uncompressed; metrics: its metrics.json)."""
    identity = {PROJECT_KEY: project, NAME_KEY: name, VERSION_KEY: version}
    token = hashlib.sha256("\n".join(identity.values()).encode()).hexdigest()[:36]  # max 36
    properties = {**identity, **({MODEL_KEY: model_id} if model_id else {})}
    return {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": f"{name} {version} from {project}",
        "InferenceSpecification": {
            "Containers": [
                {
                    "Image": image,
                    "ModelDataSource": {
                        "S3DataSource": {
                            "S3Uri": model_url,
                            "S3DataType": "S3Prefix",
                            "CompressionType": "None",
                        }
                    },
                }
            ],
            "SupportedContentTypes": ["application/x-image"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": metrics_url}
            }
        },
        "ModelApprovalStatus": "PendingManualApproval",
        "CustomerMetadataProperties": properties,
        "ClientToken": token,
    }


def register_model_package(
    group: str,
    *,
    project: str,
    name: str,
    version: str,
    model_url: str,
    metrics_url: str,
    model_id: str | None,
    image: str | None = None,
) -> tuple[str, bool]:
    """(ARN, created) of the version's model package in ``group`` (the group is created if
    missing; an existing package of the same project, name and version is reused)."""
    session = _session()
    if not session.region_name:
        raise ConfigError("--model-package-group: no AWS region configured (AWS_DEFAULT_REGION)")
    client = session.client("sagemaker")
    request = model_package_request(
        group,
        project=project,
        name=name,
        version=version,
        model_url=model_url,
        metrics_url=metrics_url,
        model_id=model_id,
        image=image or default_inference_image(session.region_name),
    )
    with aws_errors(f"--model-package-group {group}"):
        _ensure_group(client, group)
        identity = {PROJECT_KEY: project, NAME_KEY: name, VERSION_KEY: version}
        existing = _existing_package(client, group, identity)
        if existing is not None:
            return existing, False
        answer = client.create_model_package(**request)
    return str(answer["ModelPackageArn"]), True


# ----------------------------------------------------------------------------- lifecycle


@dataclass(frozen=True)
class LifecyclePlan:
    """Lifecycle rules for ``bucket``: objects under each of ``archive_prefixes`` (old run
    outputs) move to ``storage_class`` after ``archive_after_days``; incomplete multipart
    uploads anywhere in the bucket are aborted after ``abort_after_days``."""

    bucket: str
    archive_prefixes: tuple[str, ...] = field(default_factory=tuple)
    archive_after_days: int = 30
    storage_class: str = "GLACIER"
    abort_after_days: int = 7

    def __post_init__(self) -> None:
        if self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(
                f"--archive-class {self.storage_class}: use one of {', '.join(STORAGE_CLASSES)}"
            )
        if self.archive_after_days < 0 or self.abort_after_days < 1:
            raise ConfigError("--archive-after must be >= 0 and the abort age >= 1 day")

    def rules(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = [
            {
                "ID": ABORT_RULE_ID,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": self.abort_after_days},
            }
        ]
        for prefix in self.archive_prefixes:
            digest = hashlib.sha256(prefix.encode()).hexdigest()[:12]
            rules.append(
                {
                    "ID": f"visionforge-archive-{digest}",
                    "Status": "Enabled",
                    "Filter": {"Prefix": prefix},
                    "Transitions": [
                        {"Days": self.archive_after_days, "StorageClass": self.storage_class}
                    ],
                }
            )
        return rules


def plan_lifecycle(
    to: str, archive: list[str], archive_after_days: int, storage_class: str
) -> LifecyclePlan:
    """The plan for the bucket of ``to``; ``archive`` are s3:// URLs or key prefixes of run
    outputs in that bucket."""
    bucket = to.removeprefix("s3://").split("/", 1)[0]
    prefixes = []
    for entry in archive:
        if entry.startswith("s3://"):
            other, _, key = entry.removeprefix("s3://").partition("/")
            if other != bucket:
                raise ConfigError(
                    f"--archive-prefix {entry}: lifecycle rules belong to one bucket ({bucket})"
                )
            entry = key
        entry = entry.strip("/")
        if not entry:
            raise ConfigError("--archive-prefix: name a prefix, not the whole bucket")
        prefixes.append(entry + "/")
    return LifecyclePlan(bucket, tuple(sorted(set(prefixes))), archive_after_days, storage_class)


def merge_rules(existing: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``existing`` with the rules of the same ID replaced by ours and ours added."""
    by_id = {rule["ID"]: rule for rule in ours}
    kept = [rule for rule in existing if rule.get("ID") not in by_id]
    return kept + ours


def apply_lifecycle(plan: LifecyclePlan) -> bool:
    """Merge ``plan``'s rules into the bucket's lifecycle configuration; True if it changed."""
    client = _session().client("s3")
    with aws_errors(f"--lifecycle: bucket {plan.bucket}"):
        try:
            existing = client.get_bucket_lifecycle_configuration(Bucket=plan.bucket)["Rules"]
        except Exception as err:
            if _error_code(err) != "NoSuchLifecycleConfiguration":
                raise
            existing = []
        merged = merge_rules(existing, plan.rules())
        if _canonical(merged) == _canonical(existing):
            return False
        client.put_bucket_lifecycle_configuration(
            Bucket=plan.bucket, LifecycleConfiguration={"Rules": merged}
        )
    return True


def _canonical(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules as S3 returns them, ordered by ID (S3 may drop empty fields or reorder)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            pairs = ((k, clean(v)) for k, v in sorted(value.items()))
            return {k: v for k, v in pairs if v not in (None, "", {}, [])}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return sorted((clean(rule) for rule in rules), key=lambda r: str(r.get("ID")))
