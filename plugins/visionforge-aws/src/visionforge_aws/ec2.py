"""The ``ec2`` runner: one EC2 instance per run, trained by ``visionforge aws agent``.

``submit`` refuses local inputs it cannot reach (each named, as the SageMaker runner does)
unless ``upload_local``; uploads the recipe (``RUN/recipe.json``, the layout of
:mod:`visionforge_aws.agent`) and wheels of the visionforge packages (``RUN/wheels/``), and
calls RunInstances with a user-data script rendered from the package's template
(:mod:`visionforge_aws.ec2_userdata`) and tags carrying the run id. Spot runs use a persistent
spot request whose interruption behaviour is ``stop`` (``restart_on_interruption``): EC2
starts the instance again when capacity returns and systemd restarts the agent, which resumes.
The run's handle reads the instance's state and the agent's S3 markers.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from visionforge import storage
from visionforge.config import Recipe
from visionforge.errors import ConfigError, StorageError
from visionforge.interfaces import RunStatus
from visionforge.runners import RunFailedError, records
from visionforge.runners.records import RunRecord
from visionforge_aws import agent, bundle, costs, ec2_userdata
from visionforge_aws.configs import Ec2RunnerConfig
from visionforge_aws.entry import _set_field
from visionforge_aws.remote_inputs import split_inputs, upload_input
from visionforge_aws.sagemaker import RUN_TAG
from visionforge_aws.sync import sync

WHEELS = "wheels"
MANIFEST = "output/manifest.json"
_TERMINATED = ("shutting-down", "terminated")
_REASON_TIME = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) GMT\)")


def build_ec2(cfg: Ec2RunnerConfig) -> Ec2Runner:
    """Registry builder of the ``ec2`` runner."""
    return Ec2Runner(cfg)


@cache
def _models() -> Any:
    """One botocore loader for every session: the EC2 model is parsed once per process."""
    from botocore.loaders import create_loader

    return create_loader()


def _session(region: str | None) -> Any:
    """A fresh session (credentials and endpoints read now) sharing the parsed models."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _models())
    return boto3.session.Session(botocore_session=core, region_name=region)


def _epoch(value: Any) -> float:
    """A boto3 timestamp (datetime) or an ISO string as seconds since the epoch."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


class Ec2Runner:
    """Submits recipes as EC2 instances running the agent."""

    def __init__(self, cfg: Ec2RunnerConfig) -> None:
        self.cfg = cfg

    # ---------------------------------------------------------------- pieces
    def _clients(self) -> tuple[str, Any, Any]:
        session = _session(self.cfg.region)
        region = self.cfg.region or session.region_name
        if not region:
            raise ConfigError("runner.region: not set and no region in the AWS configuration")
        return region, session.client("ec2", region_name=region), session.client("ssm", region)

    def resolve_ami(self, ssm: Any) -> str:
        """``ami``, else the value of the SSM parameter ``ami_parameter``."""
        if self.cfg.ami:
            return self.cfg.ami
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.cfg.ami_parameter
        try:
            return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except (BotoCoreError, ClientError) as err:
            raise ConfigError(
                f"runner.ami_parameter: cannot read {name} ({err}); set runner.ami to an AMI "
                "id or runner.ami_parameter to a parameter holding one"
            ) from err

    def root_device(self, ec2: Any, ami: str) -> str:
        """The AMI's root device name (the EBS mapping that sizes the root volume)."""
        from botocore.exceptions import ClientError

        try:
            images = ec2.describe_images(ImageIds=[ami])["Images"]
        except ClientError as err:
            raise ConfigError(f"runner.ami: {ami}: {err}") from err
        if not images:
            raise ConfigError(f"runner.ami: {ami} not found (is it in this region?)")
        return str(images[0].get("RootDeviceName") or "/dev/sda1")

    def tags(self, run_id: str) -> list[dict[str, str]]:
        tags = {"Name": f"visionforge {run_id}", **self.cfg.tags, RUN_TAG: run_id}
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def launch_request(
        self, *, run_id: str, ami: str, root_device: str, user_data: str
    ) -> dict[str, Any]:
        """The RunInstances parameters of a run."""
        cfg = self.cfg
        profile = cfg.iam_instance_profile
        tagged = ["instance", "volume"] + (["spot-instances-request"] if cfg.spot else [])
        request: dict[str, Any] = {
            "ImageId": ami,
            "InstanceType": cfg.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": run_id,  # a retried request launches no second instance
            "UserData": user_data,
            "IamInstanceProfile": {"Arn": profile}
            if profile.startswith("arn:")
            else {"Name": profile},
            "BlockDeviceMappings": [
                {
                    "DeviceName": root_device,
                    "Ebs": {
                        "VolumeSize": cfg.volume_gb,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            # IMDSv2 only: the agent asks for a token before reading the spot notice
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": self.tags(run_id)} for kind in tagged
            ],
        }
        if cfg.key_name:
            request["KeyName"] = cfg.key_name
        if cfg.subnet_id:
            request["SubnetId"] = cfg.subnet_id
        if cfg.security_group_ids:
            request["SecurityGroupIds"] = list(cfg.security_group_ids)
        if cfg.spot:
            restart = cfg.restart_on_interruption
            request["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "persistent" if restart else "one-time",
                    "InstanceInterruptionBehavior": "stop" if restart else "terminate",
                },
            }
        return request

    def run_recipe(
        self, recipe: Recipe, run_url: str, *, upload: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """The recipe as the agent reads it (``RUN/recipe.json``): local inputs pointed at
        their upload under ``RUN/inputs/`` (uploaded when ``upload``), the runner block kept
        (the agent reads ``terminate_when_done`` there)."""
        local, _ = split_inputs(recipe, upload_local=self.cfg.upload_local, service="EC2")
        data = recipe.model_dump(mode="json")
        data["runner"] = {"type": "ec2", **self.cfg.model_dump(mode="json")}
        notes = []
        for field, path in local:
            url = f"{run_url}/inputs/{field}"
            if upload:
                target, _ = upload_input(field, path, url)
                notes.append(f"{field}: uploaded {path} to {target}")
            else:
                source = Path(path).expanduser()
                target = f"{url}/{source.name}" if source.is_file() else url
                notes.append(f"{field}: would upload {path} to {target}")
            _set_field(data, field, target)
        return data, notes

    def user_data(
        self, run_id: str, run_url: str, region: str, wheels: list[ec2_userdata.Wheel]
    ) -> str:
        return ec2_userdata.render(
            run_id=run_id,
            run_url=run_url,
            region=region,
            python=self.cfg.python,
            upload_every_s=self.cfg.upload_every_s,
            wheels=wheels,
        )

    @staticmethod
    def given_wheels(folder: str) -> list[Path]:
        """The wheels in the ``runner.wheels`` folder."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ConfigError(f"runner.wheels: {folder} is not a folder")
        return sorted(path.glob("*.whl"))

    # ---------------------------------------------------------------- protocol
    def dry_run(self, recipe: Recipe) -> str:
        """The user-data script and the RunInstances request ``submit`` would send (nothing is
        uploaded or launched; the AMI and spot price are looked up)."""
        region, ec2, ssm = self._clients()
        ami = self.resolve_ami(ssm)
        estimate = costs.ec2_estimate(
            self.cfg.instance_type, self.cfg.spot, self.cfg.volume_gb, ec2
        )
        run_id = records.new_run_id(recipe.name or "run")
        run_url = f"{self.cfg.s3_prefix.rstrip('/')}/{run_id}"
        _, notes = self.run_recipe(recipe, run_url, upload=False)
        wheels = (
            ec2_userdata.check_wheels(self.given_wheels(self.cfg.wheels), "runner.wheels")
            if self.cfg.wheels
            else ec2_userdata.installed_wheels()
        )
        script = self.user_data(run_id, run_url, region, wheels)
        request = self.launch_request(
            run_id=run_id, ami=ami, root_device=self.root_device(ec2, ami), user_data=script
        )
        shown = {**request, "UserData": "<the script above>"}
        return "\n".join(
            [
                f"# dry run: nothing uploaded, nothing launched (run id would be {run_id})",
                *(f"# {note}" for note in notes),
                f"# would upload: {run_url}/recipe.json",
                f"# would upload: {run_url}/{WHEELS}/: wheels of "
                + ", ".join(w.pin for w in wheels),
                f"# cost: {estimate.describe()}",
                "# ---- user data ----",
                script.rstrip("\n"),
                "# ---- RunInstances ----",
                json.dumps(shown, indent=2),
            ]
        )

    def submit(self, recipe: Recipe, *, resume: bool | str = False) -> Ec2Run:
        """Upload the recipe, wheels (and local inputs when asked) and launch the instance."""
        if resume is not False:
            raise ConfigError(
                "--resume: an EC2 run resumes by itself from RUN/checkpoint.json when its "
                "instance starts again; start a new run without --resume"
            )
        split_inputs(recipe, upload_local=self.cfg.upload_local, service="EC2")
        region, ec2, ssm = self._clients()
        ami = self.resolve_ami(ssm)
        root_device = self.root_device(ec2, ami)
        estimate = costs.ec2_estimate(
            self.cfg.instance_type, self.cfg.spot, self.cfg.volume_gb, ec2
        )
        run_id = records.new_run_id(recipe.name or "run")
        run_url = f"{self.cfg.s3_prefix.rstrip('/')}/{run_id}"
        data, notes = self.run_recipe(recipe, run_url, upload=True)
        for note in notes:
            print(note, file=sys.stderr)
        print(f"cost: {estimate.describe()}", file=sys.stderr)
        if not self.cfg.wheels:
            print("building wheels of the installed visionforge packages ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="visionforge-ec2-") as tmp:
            files = (
                self.given_wheels(self.cfg.wheels)
                if self.cfg.wheels
                else bundle.build_wheels(Path(tmp))
            )
            wheels = ec2_userdata.check_wheels(files, "runner.wheels")
            for wheel in wheels:
                if wheel.path is not None:  # always: these were read from files
                    storage.put_file(wheel.path, f"{run_url}/{WHEELS}/{wheel.path.name}")
        storage.write_bytes_atomic(f"{run_url}/{agent.RECIPE}", json.dumps(data, indent=2).encode())
        request = self.launch_request(
            run_id=run_id,
            ami=ami,
            root_device=root_device,
            user_data=self.user_data(run_id, run_url, region, wheels),
        )
        instance = ec2.run_instances(**request)["Instances"][0]
        record = RunRecord(
            id=run_id,
            runner={"type": "ec2", **self.cfg.model_dump(mode="json")},
            recipe=recipe.name or "",
            output=run_url,
            state={
                "status": "pending",
                "region": region,
                "ami": ami,
                "instance_id": instance["InstanceId"],
                "spot_request_id": instance.get("SpotInstanceRequestId"),
                "launch_time": _epoch(instance["LaunchTime"]),
                "estimate": estimate.as_state(),
            },
        )
        record.save()
        print(f"{run_id}: instance {instance['InstanceId']} ({region})", file=sys.stderr)
        return Ec2Run(record, self.cfg)

    def attach(self, run_id: str) -> Ec2Run:
        return Ec2Run(records.load(run_id), self.cfg)


class Ec2Run:
    """An EC2 run: its instance (by the recorded id and spot request) and its S3 prefix."""

    def __init__(self, record: RunRecord, cfg: Ec2RunnerConfig) -> None:
        self.record = record
        self.cfg = cfg
        self._ec2 = _session(record.state.get("region") or cfg.region).client("ec2")

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def url(self) -> str:
        return self.record.output

    # ---------------------------------------------------------------- what is there
    def instance(self) -> dict[str, Any] | None:
        """The run's newest instance: the recorded one, or the one its persistent spot
        request launched after it (None if EC2 no longer knows either)."""
        from botocore.exceptions import ClientError

        ids = {self.record.state["instance_id"]}
        request = self.record.state.get("spot_request_id")
        if request:
            try:
                found = self._ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[request])
            except ClientError:
                found = {}
            ids |= {
                r["InstanceId"] for r in found.get("SpotInstanceRequests", []) if "InstanceId" in r
            }
        try:
            reservations = self._ec2.describe_instances(InstanceIds=sorted(ids))["Reservations"]
        except ClientError as err:
            if "InvalidInstanceID" in str(err):
                return None
            raise
        instances = [i for r in reservations for i in r["Instances"]]
        return max(instances, key=lambda i: i["LaunchTime"]) if instances else None

    def markers(self) -> dict[str, dict[str, Any]]:
        """The agent's final markers present under the run prefix (DONE, FAILED)."""
        found = {}
        for name in (agent.DONE, agent.FAILED):
            url = f"{self.url}/{name}"
            if storage.exists(url):
                found[name] = dict(json.loads(storage.read_text(url)))
        return found

    def _final_marker(self) -> tuple[str, dict[str, Any]] | None:
        """The newest marker: a restarted agent may write DONE after an earlier FAILED."""
        markers = self.markers()
        if not markers:
            return None
        name = max(markers, key=lambda n: float(markers[n].get("time", 0)))
        return name, markers[name]

    def _cost(self, instance: dict[str, Any] | None) -> dict[str, Any] | None:
        """Instance-seconds from the first launch to the termination (or now) x the hourly
        price estimated at launch. Counts the hours a spot instance spent stopped too (an
        upper bound for the instance, exact for its EBS volume)."""
        estimate = self.record.state.get("estimate")
        launched = self.record.state.get("launch_time")
        if not estimate or launched is None:
            return None
        if instance is None:  # EC2 forgets terminated instances after a while
            recorded: dict[str, Any] | None = self.record.state.get("cost")
            return recorded
        end, final = time.time(), False
        if instance["State"]["Name"] == "terminated":
            final = True
            stamp = _REASON_TIME.search(instance.get("StateTransitionReason", ""))
            if stamp:
                end = (
                    datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S")
                    .replace(tzinfo=timezone.utc)
                    .timestamp()
                )
        return costs.ec2_billed_cost(
            max(0.0, end - float(launched)),
            float(estimate["usd_per_hour"]),
            float(estimate["ebs_usd_per_hour"]),
            final,
        )

    def _cost_into_manifest(self, cost: dict[str, Any]) -> None:
        """Write the final billed cost into the run's manifest on S3 (once)."""
        url = f"{self.url}/{MANIFEST}"
        if self.record.state.get("cost_in_manifest") or not storage.exists(url):
            return
        data = json.loads(storage.read_text(url))
        data["cost"] = cost
        storage.write_bytes_atomic(url, json.dumps(data, indent=2).encode())
        self.record.update(cost_in_manifest=True)

    def describe(self) -> tuple[RunStatus, str | None]:
        """(status, instance state) from the markers and the instance; recorded."""
        marker = self._final_marker()
        instance = self.instance()
        state = None if instance is None else str(instance["State"]["Name"])
        update: dict[str, Any] = {"instance_state": state}
        status: RunStatus
        if marker is not None and marker[0] == agent.DONE:
            status = "completed"
            update["metrics"] = marker[1].get("metrics") or {}
        elif marker is not None:
            status, update["error"] = "failed", marker[1].get("reason")
        elif state == "pending":
            status = "pending"
        elif state is not None and state not in _TERMINATED:
            status = "running"  # stopped: a spot interruption, waiting for capacity
        elif self.record.state.get("stop_requested") or (
            self.cfg.spot and not self.cfg.restart_on_interruption
        ):
            status = "stopped"  # its last checkpoint is on S3
        else:
            status = "failed"
            reason = (instance or {}).get("StateReason", {}).get("Message", "no longer known")
            update["error"] = f"instance ended without DONE or FAILED ({state}: {reason})"
        cost = self._cost(instance)
        if cost is not None:
            update["cost"] = cost
        self.record.update(status=status, **update)
        if cost is not None and cost["final"] and status != "running":
            self._cost_into_manifest(cost)
        return status, state

    # ---------------------------------------------------------------- RunHandle
    def status(self) -> RunStatus:
        return self.describe()[0]

    def logs(self) -> str:
        """The instance set-up's log, then the agent's (both uploaded to ``RUN/logs/``)."""
        parts = []
        for name in ("logs/setup.log", agent.LOG_KEY):
            url = f"{self.url}/{name}"
            if storage.exists(url):
                parts.append(storage.read_text(url))
        return "".join(parts)

    def wait(self, timeout: float | None = None) -> RunStatus:
        """Poll until the run ends (or ``timeout``), printing each change of state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[str, str | None] | None = None
        while True:
            status, state = self.describe()
            if (status, state) != seen:
                print(f"{self.id}: {status} (instance {state})", file=sys.stderr)
                seen = (status, state)
            if status not in ("pending", "running"):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return status
            time.sleep(self.cfg.poll_s)

    def stop(self) -> None:
        """Terminate the instance (cancelling a persistent spot request first, which would
        launch a replacement). The agent gets SIGTERM at shutdown and uploads a checkpoint."""
        request = self.record.state.get("spot_request_id")
        if request:
            self._ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request])
        instance = self.instance()
        ids = {self.record.state["instance_id"]} | ({instance["InstanceId"]} if instance else set())
        self.record.update(stop_requested=time.time())
        self._ec2.terminate_instances(InstanceIds=sorted(ids))

    def result(self) -> dict[str, float] | None:
        marker = self._final_marker()
        if marker is None or marker[0] != agent.DONE:
            return None
        metrics = marker[1].get("metrics") or {}
        return {str(k): float(v) for k, v in metrics.items()}

    def error(self) -> BaseException | None:
        if self.status() != "failed":
            return None
        return RunFailedError(f"EC2 run {self.id}: {self.record.state.get('error')}")

    def artifacts(self) -> list[str]:
        """Download the run's files (``RUN/output/``, the logs and the newest complete
        checkpoint as ``last.ckpt``) into the run's local folder; returns the local paths."""
        folder = records.runs_folder() / self.id
        report = sync(f"{self.url}/output", folder, progress=sys.stderr.isatty())
        if not report.ok:
            raise StorageError(f"{self.url}/output: downloading failed: {report.failed}")
        sync(f"{self.url}/logs", folder / "logs", progress=False)
        agent.restore_checkpoint(self.url, folder)
        manifest = folder / "manifest.json"
        cost = self.record.reload().state.get("cost")
        if manifest.exists() and cost is not None:
            data = json.loads(manifest.read_text())
            data["cost"] = cost
            storage.write_bytes_atomic(manifest, json.dumps(data, indent=2).encode())
        self.record.update(artifacts=str(folder))
        return sorted(str(p) for p in folder.rglob("*") if p.is_file())
