"""The ``sagemaker`` runner: one CreateTrainingJob per run, reachable later by its id.

``submit`` checks the recipe's input paths (local ones are refused, naming each field, unless
``upload_local``), turns every input into a SageMaker channel (the in-container entry maps
each channel back onto its field), uploads the source bundle and calls CreateTrainingJob
through boto3 in script mode: hyperparameters JSON-encoded as the SageMaker SDK does, no
toolkit-side distribution launcher (our entry starts torchrun itself), a CheckpointConfig so a
spot interruption or retry resumes, MaxWait >= MaxRun for spot. The run id is the job name.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from visionforge import storage
from visionforge.config import Recipe
from visionforge.errors import ConfigError, StorageError
from visionforge.interfaces import RunStatus
from visionforge.runners import RunFailedError, records
from visionforge.runners.records import RunRecord
from visionforge_aws import bundle, costs, safetar
from visionforge_aws.configs import SageMakerRunnerConfig
from visionforge_aws.remote_inputs import split_inputs, upload_input

CHECKPOINT_DIR = "/opt/ml/checkpoints"
CHECKPOINT_ENV = "VISIONFORGE_CHECKPOINT_DIR"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
RUN_TAG = "visionforge:run-id"
DLC_ACCOUNT = "763104351884"
_STATUS: dict[str, RunStatus] = {
    "InProgress": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Stopping": "running",
    "Stopped": "stopped",
}


def build_sagemaker(cfg: SageMakerRunnerConfig) -> SageMakerRunner:
    """Registry builder of the ``sagemaker`` runner."""
    return SageMakerRunner(cfg)


def default_image(cfg: SageMakerRunnerConfig, region: str) -> str:
    """The AWS Deep Learning Container for PyTorch training in ``region``."""
    device = "gpu" if re.match(r"ml\.(g|p)\d", cfg.instance_type) else "cpu"
    return (
        f"{DLC_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/pytorch-training:"
        f"{cfg.pytorch_version}-{device}-{cfg.python_version}"
    )


def channel_name(field: str) -> str:
    """``data.train.root`` -> ``data-train-root`` (SageMaker channel names)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", field)[:64]


def _set_field(data: dict[str, Any], dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


def _session(region: str | None) -> Any:
    import boto3

    return boto3.session.Session(region_name=region)


class SageMakerRunner:
    """Submits recipes as SageMaker training jobs."""

    def __init__(self, cfg: SageMakerRunnerConfig) -> None:
        self.cfg = cfg

    # ---------------------------------------------------------------- inputs
    def check_inputs(self, recipe: Recipe) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(local, remote) input paths; local ones are refused, each named, unless
        ``upload_local``, and remote ones must be s3:// URLs."""
        return split_inputs(recipe, upload_local=self.cfg.upload_local, service="SageMaker")

    def plan_inputs(self, recipe: Recipe, run_prefix: str) -> tuple[dict[str, Any], list[str]]:
        """The channels for the recipe's inputs and the notes about uploads.

        Returns ``({"channels": {name: s3}, "fields": {name: [field, is_file]}}, notes)``;
        local inputs are refused (all named in one error) unless ``upload_local``.
        """
        channels = dict(self.cfg.channels)
        fields: dict[str, list[Any]] = {}
        local, other = self.check_inputs(recipe)
        notes = []
        for field, path in local:
            url = f"{run_prefix}/inputs/{channel_name(field)}"
            target, is_file = upload_input(field, path, url)
            notes.append(f"{field}: uploaded {path} to {target}")
            other.append((field, target))
            fields[channel_name(field)] = [field, is_file]
        for field, url in other:
            name = channel_name(field)
            if name in channels:
                raise ConfigError(f"runner.channels.{name}: clashes with the input {field}")
            channels[name] = url
            if name not in fields:
                fs, path = storage.filesystem(url)
                fields[name] = [field, bool(fs.isfile(path))]
        return {"channels": channels, "fields": fields}, notes

    # ---------------------------------------------------------------- request
    def training_job_request(
        self,
        run_id: str,
        region: str,
        submit_dir: str,
        channels: dict[str, str],
    ) -> dict[str, Any]:
        """The CreateTrainingJob parameters of a run (script mode, JSON-encoded values)."""
        cfg = self.cfg
        output = cfg.output.rstrip("/")
        checkpoint = cfg.checkpoint or f"{output}/{run_id}/checkpoints"
        hyperparameters = {
            "sagemaker_program": bundle.ENTRY_SCRIPT,
            "sagemaker_submit_directory": submit_dir,
            "sagemaker_region": region,
            "sagemaker_container_log_level": 20,
            "sagemaker_job_name": run_id,
        }
        request: dict[str, Any] = {
            "TrainingJobName": run_id,
            "HyperParameters": {k: json.dumps(v) for k, v in hyperparameters.items()},
            "AlgorithmSpecification": {
                "TrainingImage": cfg.image_uri or default_image(cfg, region),
                "TrainingInputMode": "File",
            },
            "RoleArn": cfg.role,
            "InputDataConfig": [
                {
                    "ChannelName": name,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
                for name, uri in sorted(channels.items())
            ],
            "OutputDataConfig": {"S3OutputPath": output},
            "ResourceConfig": {
                "InstanceType": cfg.instance_type,
                "InstanceCount": cfg.instance_count,
                "VolumeSizeInGB": cfg.volume_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_run},
            "EnableManagedSpotTraining": cfg.spot,
            "CheckpointConfig": {"S3Uri": checkpoint, "LocalPath": CHECKPOINT_DIR},
            "Environment": {**cfg.environment, CHECKPOINT_ENV: CHECKPOINT_DIR},
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(cfg.tags.items())]
            + [{"Key": RUN_TAG, "Value": run_id}],
        }
        if cfg.spot:
            request["StoppingCondition"]["MaxWaitTimeInSeconds"] = cfg.max_wait or cfg.max_run
        if not request["InputDataConfig"]:
            del request["InputDataConfig"]
        return request

    # ---------------------------------------------------------------- protocol
    def submit(self, recipe: Recipe, *, resume: bool | str = False) -> SageMakerRun:
        """Upload the bundle (and local inputs when asked) and create the training job."""
        if isinstance(resume, str):
            raise ConfigError(
                "--resume CKPT: a SageMaker run resumes from its own checkpoint prefix "
                "(runner.checkpoint); copy the checkpoint there as last.ckpt"
            )
        self.check_inputs(recipe)
        session = _session(self.cfg.region)
        region = self.cfg.region or session.region_name
        if not region:
            raise ConfigError("runner.region: not set and no region in the AWS configuration")
        estimate = costs.estimate(
            self.cfg.instance_type, self.cfg.instance_count, self.cfg.max_run, self.cfg.spot
        )
        run_id = records.new_run_id(recipe.name or "run")
        run_prefix = f"{self.cfg.output.rstrip('/')}/{run_id}"
        plan, notes = self.plan_inputs(recipe, run_prefix)
        for note in notes:
            print(note, file=sys.stderr)
        print(f"cost: {estimate.describe()}", file=sys.stderr)
        submit_dir = f"{run_prefix}/source/sourcedir.tar.gz"
        data = recipe.model_dump(mode="json")
        data["runner"] = {"type": "local"}  # inside the container the run is local
        entry = {
            "fields": plan["fields"],
            "master_port": self.cfg.master_port,
            "run_id": run_id,
        }
        with tempfile.TemporaryDirectory(prefix="visionforge-sm-") as tmp:
            tar = Path(tmp) / "sourcedir.tar.gz"
            bundle.write_bundle(tar, data, entry)
            storage.put_file(tar, submit_dir)
        request = self.training_job_request(run_id, region, submit_dir, plan["channels"])
        client = session.client("sagemaker", region_name=region)
        client.create_training_job(**request)
        record = RunRecord(
            id=run_id,
            runner={"type": "sagemaker", **self.cfg.model_dump(mode="json")},
            recipe=recipe.name or "",
            output=run_prefix,
            state={
                "status": "running",
                "region": region,
                "estimate_usd": round(estimate.on_demand, 2),
                "estimate_spot_usd": None if estimate.spot is None else round(estimate.spot, 2),
                "price_table": estimate.table_date,
            },
        )
        record.save()
        return SageMakerRun(record, self.cfg)

    def attach(self, run_id: str) -> SageMakerRun:
        return SageMakerRun(records.load(run_id), self.cfg)


class SageMakerRun:
    """A training job (its name is the run id)."""

    def __init__(self, record: RunRecord, cfg: SageMakerRunnerConfig) -> None:
        self.record = record
        self.cfg = cfg
        self._session = _session(record.state.get("region") or cfg.region)

    @property
    def id(self) -> str:
        return self.record.id

    def _client(self, service: str) -> Any:
        return self._session.client(service)

    def describe(self) -> dict[str, Any]:
        job: dict[str, Any] = self._client("sagemaker").describe_training_job(
            TrainingJobName=self.id
        )
        status = _STATUS.get(job["TrainingJobStatus"], "running")
        state: dict[str, Any] = {"status": status, "job_status": job["TrainingJobStatus"]}
        billed = costs.billed_cost(job)
        if billed is not None:
            state["cost"] = billed
        if job.get("FailureReason"):
            state["error"] = job["FailureReason"]
        if job.get("ModelArtifacts", {}).get("S3ModelArtifacts"):
            state["model"] = job["ModelArtifacts"]["S3ModelArtifacts"]
        self.record.update(**state)
        return job

    def status(self) -> RunStatus:
        return _STATUS.get(self.describe()["TrainingJobStatus"], "running")

    def logs(self) -> str:
        """The job's CloudWatch streams ``<job>/algo-N-...``, one after the other."""
        logs = self._client("logs")
        lines: list[str] = []
        streams = logs.describe_log_streams(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.id}/"
        ).get("logStreams", [])
        for stream in sorted(streams, key=lambda s: s["logStreamName"]):
            token = None
            while True:
                kwargs: dict[str, Any] = {
                    "logGroupName": LOG_GROUP,
                    "logStreamName": stream["logStreamName"],
                    "startFromHead": True,
                }
                if token:
                    kwargs["nextToken"] = token
                page = logs.get_log_events(**kwargs)
                lines += [e["message"] for e in page.get("events", [])]
                if page.get("nextForwardToken") in (None, token):
                    break
                token = page["nextForwardToken"]
        return "\n".join(lines) + ("\n" if lines else "")

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Poll until the job ends (or ``timeout``), printing each secondary-status change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = ""
        while True:
            job = self.describe()
            status = _STATUS.get(job["TrainingJobStatus"], "running")
            secondary = job.get("SecondaryStatus", "")
            if secondary != seen:
                print(f"{self.id}: {job['TrainingJobStatus']} / {secondary}", file=sys.stderr)
                seen = secondary
            if status != "running" or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(self.cfg.poll_s)

    def stop(self) -> None:
        """StopTrainingJob: SageMaker sends SIGTERM; the entry checkpoints and exits 0."""
        self._client("sagemaker").stop_training_job(TrainingJobName=self.id)
        self.record.update(stop_requested=time.time())

    def result(self) -> dict[str, float] | None:
        metrics = self.record.reload().state.get("metrics")
        if metrics is None and self.status() in ("completed", "stopped"):
            try:  # the metrics travel in the model's manifest
                self.artifacts()
            except StorageError:
                return None
            metrics = self.record.reload().state.get("metrics")
        return {str(k): float(v) for k, v in metrics.items()} if metrics else None

    def error(self) -> BaseException | None:
        if self.status() != "failed":
            return None
        return RunFailedError(f"SageMaker job {self.id}: {self.record.state.get('error')}")

    def artifacts(self) -> list[str]:
        """Download model.tar.gz and extract it safely under the run's local folder."""
        model = self.record.state.get("model") or self.describe().get("ModelArtifacts", {}).get(
            "S3ModelArtifacts"
        )
        if not model:
            return []
        folder = records.runs_folder() / self.id
        with storage.local_copy(model) as archive:
            files = safetar.extract(archive, folder / "model")
        manifest = folder / "model" / "manifest.json"
        state: dict[str, Any] = {"artifacts": str(folder / "model")}
        if manifest.exists():
            data = json.loads(manifest.read_text())
            state["metrics"] = data.get("metrics") or {}
            cost = self.record.state.get("cost")
            if cost is not None:  # the billed cost joins the run's manifest
                data["cost"] = cost
                storage.write_bytes_atomic(manifest, json.dumps(data, indent=2).encode())
        self.record.update(**state)
        return [model, *map(str, files)]
