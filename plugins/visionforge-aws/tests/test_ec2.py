"""The EC2 runner against real clients on loopback: EC2, SSM and IAM on moto's server mode
(user data is stored, not run), S3 on SeaweedFS."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import yaml
from pydantic import ValidationError

from visionforge import cli, storage
from visionforge.config import recipe_from_dict
from visionforge.errors import ConfigError
from visionforge.runners import records
from visionforge_aws import agent, costs, ec2_userdata
from visionforge_aws.configs import DLAMI_PARAMETER, Ec2RunnerConfig
from visionforge_aws.ec2 import Ec2Run, Ec2Runner

PROFILE = "visionforge-ec2"
VERSION = metadata.version("visionforge")
AWS_VERSION = metadata.version("visionforge-aws")


def make_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) of ``name`` ``version``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    meta = "".join(
        [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
        + [f"Requires-Dist: {r}\n" for r in requires]
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{stem}.dist-info/METADATA", meta)
        archive.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        archive.writestr(f"{stem}.dist-info/RECORD", "")
    return path


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    make_wheel(folder, "visionforge", VERSION, ["pydantic>=2.6", "torch>=2.1"])
    make_wheel(
        folder,
        "visionforge-aws",
        AWS_VERSION,
        [f"visionforge>={VERSION}", "boto3>=1.34", 'pytest; extra == "dev"'],
    )
    make_wheel(folder, "numpy", "2.0.0", [])  # not ours: shipped, not installed by name
    return folder


def tiny_recipe(runner: dict[str, Any], train: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "tiny-ec2",
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 2},
        "data": {
            "train": train
            or {
                "type": "synthetic_classification",
                "num_classes": 2,
                "num_samples": 8,
                "image_size": 16,
            }
        },
        "optimizer": {"type": "sgd", "lr": 0.05},
        "trainer": {"epochs": 1, "batch_size": 4, "device": "cpu", "output": "runs/tiny"},
        "runner": runner,
    }


def recorded(endpoint: str, action: str) -> list[dict[str, str]]:
    """The form fields of every recorded EC2/IAM query request ``action``."""
    with urllib.request.urlopen(endpoint + "/moto-api/recorder/download-recording") as answer:
        lines = answer.read().decode().splitlines()
    found = []
    for line in lines:
        entry = json.loads(line)
        body = entry["body"]
        raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
        try:
            fields = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            continue
        if fields.get("Action") == action:
            found.append(fields)
    return found


def recorded_targets(endpoint: str, target: str) -> list[dict[str, Any]]:
    """JSON bodies of recorded requests with X-Amz-Target ``target`` (SSM)."""
    with urllib.request.urlopen(endpoint + "/moto-api/recorder/download-recording") as answer:
        lines = answer.read().decode().splitlines()
    bodies = []
    for line in lines:
        entry = json.loads(line)
        if entry["headers"].get("X-Amz-Target") == target:
            body = entry["body"]
            raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
            bodies.append(json.loads(raw))
    return bodies


class Cloud:
    """moto's EC2/SSM/IAM with what a run needs: an AMI, a subnet, a security group, an
    instance profile and an SSM parameter naming the AMI."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ec2 = boto3.client("ec2", region_name="us-east-1")
        self.ssm = boto3.client("ssm", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        iam.create_instance_profile(InstanceProfileName=PROFILE)
        self.root_device = "/dev/sda1"
        self.ami = self.ec2.register_image(
            Name="deep-learning-ami-test",
            RootDeviceName=self.root_device,
            Architecture="x86_64",
            VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": self.root_device, "Ebs": {"VolumeSize": 75}}],
        )["ImageId"]
        self.subnet = self.ec2.describe_subnets()["Subnets"][0]
        self.group = self.ec2.create_security_group(
            GroupName="visionforge", Description="no inbound", VpcId=self.subnet["VpcId"]
        )["GroupId"]
        self.parameter = "/test/deeplearning/ami-id"
        self.ssm.put_parameter(Name=self.parameter, Value=self.ami, Type="String")

    def instances(self) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances()["Reservations"]
        return [i for r in reservations for i in r["Instances"]]


@pytest.fixture
def cloud(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    for service in ("EC2", "SSM", "IAM"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", moto_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto takes any; S3 keeps its
        if key not in os.environ:
            monkeypatch.setenv(key, "moto")
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # 1,300 AMIs take seconds
    moto_server.post("/moto-api/reset")
    moto_server.post("/moto-api/recorder/reset-recording")
    moto_server.post("/moto-api/recorder/start-recording")
    return Cloud(moto_server.endpoint)


def ec2_runner(bucket: str, cloud: Cloud, wheels: Path, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ec2",
        "s3_prefix": f"{bucket}/ec2",
        "iam_instance_profile": PROFILE,
        "ami_parameter": cloud.parameter,
        "wheels": str(wheels),
        **fields,
    }


def submit(recipe: dict[str, Any]) -> Ec2Run:
    cfg = Ec2RunnerConfig(**{k: v for k, v in recipe["runner"].items() if k != "type"})
    return Ec2Runner(cfg).submit(recipe_from_dict(recipe))


# ----------------------------------------------------------------------------- configuration


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ValidationError, match="s3_prefix: 'out' must be an s3:// prefix"):
        Ec2RunnerConfig(s3_prefix="out", iam_instance_profile=PROFILE)
    with pytest.raises(ValidationError, match="ami: 'ubuntu' is not an AMI id"):
        Ec2RunnerConfig(s3_prefix="s3://bkt/r", iam_instance_profile=PROFILE, ami="ubuntu")
    with pytest.raises(ValidationError, match="restart_on_interruption: only for spot"):
        Ec2RunnerConfig(
            s3_prefix="s3://bkt/r", iam_instance_profile=PROFILE, restart_on_interruption=False
        )
    with pytest.raises(ValidationError, match="tags.visionforge:run-id: 1-128 characters"):
        Ec2RunnerConfig(
            s3_prefix="s3://bkt/r", iam_instance_profile=PROFILE, tags={"visionforge:run-id": "x"}
        )
    cfg = Ec2RunnerConfig(s3_prefix="s3://bkt/r", iam_instance_profile=PROFILE)
    assert cfg.ami_parameter == DLAMI_PARAMETER and cfg.ami is None


# ----------------------------------------------------------------------------- costs


def test_cost_estimate_with_and_without_spot_price_history(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = costs.ec2_table()
    seeds = {"g4dn.xlarge", "g5.2xlarge", "g6.xlarge", "p4d.24xlarge", "p3.2xlarge"}
    assert seeds <= set(table["on_demand_per_hour"]) and seeds <= set(
        table["spot_estimate_per_hour"]
    )
    on_demand = table["on_demand_per_hour"]["g5.2xlarge"]
    # moto answers DescribeSpotPriceHistory with one price per zone
    quote = cloud.ec2.describe_spot_price_history(
        InstanceTypes=["g5.2xlarge"], ProductDescriptions=["Linux/UNIX"]
    )["SpotPriceHistory"]
    history = costs.ec2_estimate("g5.2xlarge", True, 200, cloud.ec2)
    assert history.spot_per_hour == pytest.approx(float(quote[0]["SpotPrice"]))
    assert history.spot_source is not None and "DescribeSpotPriceHistory" in history.spot_source
    assert history.on_demand_per_hour == on_demand
    assert history.ebs_per_hour == pytest.approx(200 * table["ebs_gp3_per_gb_month"] / 730)
    assert "spot" in history.describe() and table["date"] in history.describe()
    # EC2 unreachable: the table's dated spot estimate
    closed = boto3.client(
        "ec2", region_name="us-east-1", endpoint_url="http://127.0.0.1:9"
    )  # port 9 (discard): nothing listens on loopback
    fallback = costs.ec2_estimate("g5.2xlarge", True, 200, closed)
    assert fallback.spot_per_hour == table["spot_estimate_per_hour"]["g5.2xlarge"]
    assert fallback.spot_source == f"no spot price history; typical price of {table['date']}"
    plain = costs.ec2_estimate("g5.2xlarge", False, 200, closed)
    assert plain.spot_per_hour is None and plain.per_hour == on_demand
    billed = costs.ec2_billed_cost(1800, plain.per_hour, plain.ebs_per_hour, final=True)
    assert billed["usd"] == pytest.approx(on_demand / 2, abs=1e-4)
    with pytest.raises(ConfigError, match="runner.instance_type: no EC2 price for x9.huge"):
        costs.ec2_estimate("x9.huge", False, 100, closed)


# ----------------------------------------------------------------------------- user data


def test_user_data_installs_only_the_shipped_wheels_and_starts_the_agent(wheels: Path) -> None:
    found = ec2_userdata.check_wheels(sorted(wheels.glob("*.whl")), "runner.wheels")
    assert [w.name for w in found] == ["visionforge", "visionforge-aws"]
    script = ec2_userdata.render(
        run_id="r-1",
        run_url="s3://bucket/ec2/r-1",
        region="eu-west-1",
        python="/opt/pytorch/bin/python",
        upload_every_s=60,
        wheels=found,
    )
    assert script.startswith("#!/bin/bash\n")
    assert (
        "/opt/pytorch/bin/python -m pip install --no-index --no-deps --find-links "
        f'"$ROOT/wheels" \\\n  visionforge=={VERSION} visionforge-aws=={AWS_VERSION}\n'
    ) in script
    # third-party dependencies, quoted; not the extras', not visionforge from an index
    assert "-m pip install 'boto3>=1.34' 'pydantic>=2.6' 'torch>=2.1'\n" in script
    assert "pytest" not in script and "numpy" not in script
    assert 'aws s3 cp --recursive --only-show-errors "$RUN/wheels/"' in script
    assert "RUN=s3://bucket/ec2/r-1\n" in script and "AWS_DEFAULT_REGION=eu-west-1" in script
    assert (
        "ExecStart=/opt/pytorch/bin/python -m visionforge.cli aws agent --run "
        "s3://bucket/ec2/r-1 --work /opt/visionforge/work --log /var/log/visionforge/agent.log "
        "--upload-every 60\n"
    ) in script
    for line in ("Restart=on-failure", "WantedBy=multi-user.target", "TimeoutStopSec=110"):
        assert f"\n{line}\n" in script
    assert "systemctl enable --now visionforge-agent.service" in script
    assert '"$RUN/FAILED"' in script  # a failed set-up says so where status looks
    assert "$" + "{" not in script  # every template field was filled
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash


def test_wheels_of_another_version_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    make_wheel(folder, "visionforge", "0.0.1", [])
    make_wheel(folder, "visionforge-aws", AWS_VERSION, [])
    with pytest.raises(ConfigError, match=f"visionforge wheel is version 0.0.1, but {VERSION}"):
        ec2_userdata.check_wheels(sorted(folder.glob("*.whl")), "runner.wheels")
    (folder / "visionforge-0.0.1-py3-none-any.whl").unlink()
    with pytest.raises(ConfigError, match="runner.wheels: no visionforge wheel"):
        ec2_userdata.check_wheels(sorted(folder.glob("*.whl")), "runner.wheels")


# ----------------------------------------------------------------------------- submit


def test_submit_sends_every_field(
    s3_bucket: str,
    cloud: Cloud,
    wheels: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"png")
    runner = ec2_runner(
        s3_bucket,
        cloud,
        wheels,
        instance_type="g4dn.xlarge",
        spot=True,
        key_name="me",
        subnet_id=cloud.subnet["SubnetId"],
        security_group_ids=[cloud.group],
        volume_gb=150,
        tags={"team": "vision"},
        upload_local=True,
    )
    train = {"type": "image_folder", "root": str(tmp_path / "train")}
    handle = submit(tiny_recipe(runner, train))
    run_url = f"{s3_bucket}/ec2/{handle.id}"
    err = capsys.readouterr().err
    assert (
        f"data.train.root: uploaded {tmp_path / 'train'} to {run_url}/inputs/data.train.root"
        in (err)
    )
    assert "cost: g4dn.xlarge: $0.526/h on-demand, about $" in err
    (request,) = recorded(cloud.endpoint, "RunInstances")
    user_data = base64.b64decode(request.pop("UserData")).decode()
    tags = {"Name": f"visionforge {handle.id}", "team": "vision", "visionforge:run-id": handle.id}
    expected = {
        "Action": "RunInstances",
        "Version": "2016-11-15",
        "ImageId": cloud.ami,
        "InstanceType": "g4dn.xlarge",
        "MinCount": "1",
        "MaxCount": "1",
        "ClientToken": handle.id,
        "KeyName": "me",
        "SubnetId": cloud.subnet["SubnetId"],
        "SecurityGroupId.1": cloud.group,
        "IamInstanceProfile.Name": PROFILE,
        "BlockDeviceMapping.1.DeviceName": cloud.root_device,
        "BlockDeviceMapping.1.Ebs.VolumeSize": "150",
        "BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
        "MetadataOptions.HttpTokens": "required",
        "MetadataOptions.HttpEndpoint": "enabled",
        "InstanceMarketOptions.MarketType": "spot",
        "InstanceMarketOptions.SpotOptions.SpotInstanceType": "persistent",
        "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior": "stop",
    }
    for n, kind in enumerate(("instance", "volume", "spot-instances-request"), start=1):
        expected[f"TagSpecification.{n}.ResourceType"] = kind
        for m, (key, value) in enumerate(tags.items(), start=1):
            expected[f"TagSpecification.{n}.Tag.{m}.Key"] = key
            expected[f"TagSpecification.{n}.Tag.{m}.Value"] = value
    assert request == expected
    # the stored user data is the rendered script: the run's wheels, the agent on its URL
    (instance,) = cloud.instances()
    stored = cloud.ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    assert base64.b64decode(stored).decode() == user_data
    assert f"# visionforge run {handle.id} (visionforge {VERSION})" in user_data
    assert f"visionforge=={VERSION} visionforge-aws=={AWS_VERSION}" in user_data
    assert f"aws agent --run {run_url} --work" in user_data
    assert "Restart=on-failure" in user_data
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}["visionforge:run-id"] == handle.id
    # what the agent reads: the recipe with the uploaded input and the runner block; wheels
    shipped = json.loads(storage.read_text(f"{run_url}/{agent.RECIPE}"))
    assert shipped["data"]["train"]["root"] == f"{run_url}/inputs/data.train.root"
    assert shipped["runner"]["type"] == "ec2" and shipped["runner"]["terminate_when_done"]
    assert storage.exists(f"{run_url}/inputs/data.train.root/a/0.png")
    names = {
        Path(p).name
        for p in storage.filesystem(f"{run_url}/wheels")[0].ls(
            f"{run_url}/wheels".removeprefix("s3://")
        )
    }
    assert names == {
        f"visionforge-{VERSION}-py3-none-any.whl",
        f"visionforge_aws-{AWS_VERSION}-py3-none-any.whl",
    }
    record = records.load(handle.id)
    assert record.state["instance_id"] == instance["InstanceId"]
    assert record.state["estimate"]["usd_per_hour"] == pytest.approx(
        float(
            cloud.ec2.describe_spot_price_history(InstanceTypes=["g4dn.xlarge"])[
                "SpotPriceHistory"
            ][0]["SpotPrice"]
        )
    )


def test_ami_from_the_default_ssm_parameter_or_the_override(
    cloud: Cloud, wheels: Path, s3_bucket: str
) -> None:
    runner = ec2_runner(s3_bucket, cloud, wheels)
    del runner["ami_parameter"]  # the Deep Learning AMI's public parameter (not in moto)
    with pytest.raises(ConfigError, match=f"runner.ami_parameter: cannot read {DLAMI_PARAMETER}"):
        submit(tiny_recipe(runner))
    assert recorded_targets(cloud.endpoint, "AmazonSSM.GetParameter") == [{"Name": DLAMI_PARAMETER}]
    assert not cloud.instances()
    # the overridable parameter name, put into moto's SSM by the fixture
    fields = {k: v for k, v in runner.items() if k != "type"}
    ssm = Ec2Runner(Ec2RunnerConfig(**{**fields, "ami_parameter": cloud.parameter}))
    assert ssm.resolve_ami(cloud.ssm) == cloud.ami
    # ami given: SSM is not asked
    cloud_calls = len(recorded_targets(cloud.endpoint, "AmazonSSM.GetParameter"))
    handle = submit(tiny_recipe({**runner, "ami": cloud.ami}))
    assert len(recorded_targets(cloud.endpoint, "AmazonSSM.GetParameter")) == cloud_calls
    assert records.load(handle.id).state["ami"] == cloud.ami


def test_on_demand_and_one_time_spot_requests(cloud: Cloud, wheels: Path, s3_bucket: str) -> None:
    submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels)))
    submit(
        tiny_recipe(ec2_runner(s3_bucket, cloud, wheels, spot=True, restart_on_interruption=False))
    )
    on_demand, one_time = recorded(cloud.endpoint, "RunInstances")
    assert not any(k.startswith("InstanceMarketOptions") for k in on_demand)
    assert "TagSpecification.3.ResourceType" not in on_demand  # no spot request to tag
    assert one_time["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert one_time["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == (
        "terminate"
    )


def put_marker(run_url: str, name: str, **content: Any) -> None:
    body = {"time": time.time(), **content}
    storage.write_bytes_atomic(f"{run_url}/{name}", json.dumps(body).encode())


def test_status_combines_instance_state_and_markers(
    cloud: Cloud, wheels: Path, s3_bucket: str
) -> None:
    handle = submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels, spot=True)))
    assert handle.status() in ("pending", "running")  # moto: pending, then running
    assert handle.status() == "running"
    cloud.ec2.stop_instances(InstanceIds=[handle.record.state["instance_id"]])
    assert handle.status() == "running"  # stopped by a spot interruption: it comes back
    assert handle.record.state["instance_state"] in ("stopping", "stopped")
    put_marker(handle.url, agent.FAILED, reason="RuntimeError: out of memory")
    assert handle.status() == "failed"
    assert "out of memory" in str(handle.error())
    assert handle.result() is None
    time.sleep(0.01)
    put_marker(handle.url, agent.DONE, metrics={"top1": 0.75})  # a restart succeeded
    assert handle.status() == "completed"
    assert handle.result() == {"top1": 0.75} and handle.error() is None
    assert handle.wait(timeout=5) == "completed"


def test_stop_terminates_and_the_billed_cost_joins_the_manifest(
    cloud: Cloud, wheels: Path, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels)))
    storage.write_bytes_atomic(
        f"{handle.url}/output/manifest.json", json.dumps({"id": "m", "metrics": {}}).encode()
    )
    assert cli.main(["runs", "stop", handle.id]) == 0
    assert "stop requested" in capsys.readouterr().out
    (terminate,) = recorded(cloud.endpoint, "TerminateInstances")
    assert terminate["InstanceId.1"] == handle.record.state["instance_id"]
    (instance,) = cloud.instances()
    assert instance["State"]["Name"] == "terminated"
    again = records.attach(handle.id)
    assert again.status() == "stopped"
    cost = records.load(handle.id).state["cost"]
    estimate = records.load(handle.id).state["estimate"]
    assert cost["final"] and cost["usd_per_hour"] == estimate["usd_per_hour"]
    assert cost["usd"] == pytest.approx(
        cost["instance_seconds"] * estimate["usd_per_hour"] / 3600, abs=1e-3
    )
    manifest = json.loads(storage.read_text(f"{handle.url}/output/manifest.json"))
    assert manifest["cost"] == cost


def test_an_instance_lost_without_a_marker_is_a_failure(
    cloud: Cloud, wheels: Path, s3_bucket: str
) -> None:
    handle = submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels)))
    cloud.ec2.terminate_instances(InstanceIds=[handle.record.state["instance_id"]])
    assert handle.status() == "failed"
    assert "instance ended without DONE or FAILED (terminated" in str(handle.error())


def test_artifacts_logs_and_attach_by_id(
    cloud: Cloud, wheels: Path, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels)))
    run = handle.url
    storage.write_bytes_atomic(f"{run}/output/manifest.json", b'{"id": "m"}')
    storage.write_bytes_atomic(f"{run}/output/metrics.csv", b"epoch,loss\n1,0.5\n")
    storage.write_bytes_atomic(f"{run}/logs/setup.log", b"installed\n")
    storage.write_bytes_atomic(f"{run}/logs/agent.log", b"epoch 1 loss 0.5\n")
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"weights")
    agent.publish_checkpoint(run, checkpoint)
    put_marker(run, agent.DONE, metrics={"top1": 0.5})
    assert cli.main(["runs", "logs", handle.id]) == 0
    assert capsys.readouterr().out == "installed\nepoch 1 loss 0.5\n"
    assert cli.main(["runs", "status", handle.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith("completed") and "top1" in out
    assert cli.main(["runs", "artifacts", handle.id]) == 0
    listed = capsys.readouterr().out.split()
    folder = records.runs_folder() / handle.id
    assert {Path(p).relative_to(folder).as_posix() for p in listed} == {
        "last.ckpt",
        "manifest.json",
        "metrics.csv",
        "logs/agent.log",
        "logs/setup.log",
    }
    assert (folder / "last.ckpt").read_bytes() == b"weights"
    assert json.loads((folder / "manifest.json").read_text())["cost"]["usd_per_hour"] > 0
    assert isinstance(records.attach(handle.id), Ec2Run)


# ----------------------------------------------------------------------------- the CLI


def test_local_paths_are_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = {"type": "ec2", "s3_prefix": "s3://bkt/ec2", "iam_instance_profile": PROFILE}
    train = {"type": "image_folder", "root": str(tmp_path / "train")}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(runner, train)))
    assert cli.main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"local paths cannot be reached from EC2: data.train.root: {tmp_path / 'train'}" in err
    assert "--upload-local" in err


def test_dry_run_shows_the_script_and_request_and_launches_nothing(
    cloud: Cloud, wheels: Path, s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels, spot=True))))
    assert cli.main(["train", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# dry run: nothing uploaded, nothing launched")
    script = out.split("# ---- user data ----\n")[1].split("# ---- RunInstances ----\n")[0]
    assert script.startswith("#!/bin/bash") and "--no-index --no-deps" in script
    request = json.loads(out.split("# ---- RunInstances ----\n")[1])
    assert request["ImageId"] == cloud.ami and request["UserData"] == "<the script above>"
    assert request["InstanceMarketOptions"]["SpotOptions"] == {
        "SpotInstanceType": "persistent",
        "InstanceInterruptionBehavior": "stop",
    }
    assert not cloud.instances() and not recorded(cloud.endpoint, "RunInstances")
    assert not storage.exists(f"{s3_bucket}/ec2") and not records.all_records()


def test_dry_run_is_refused_by_runners_that_cannot_show_their_submission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipe.yaml"
    data = tiny_recipe({"type": "local"})
    data["trainer"]["output"] = str(tmp_path / "runs" / "tiny")
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(path), "--dry-run"]) == 2
    assert "--dry-run: the LocalRunner runner does not support it" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_submit_ships_wheels_built_from_the_installed_packages(
    cloud: Cloud, s3_bucket: str, tmp_path: Path
) -> None:
    """Without runner.wheels the run carries wheels of every installed visionforge package
    (pip wheel of each, about a minute), and the user data pins exactly those."""
    runner = ec2_runner(s3_bucket, cloud, tmp_path)
    del runner["wheels"]
    handle = submit(tiny_recipe(runner))
    fs, path = storage.filesystem(f"{handle.url}/wheels")
    shipped = {Path(p).name.split("-")[0] for p in fs.ls(path)}
    installed = {w.name.replace("-", "_") for w in ec2_userdata.installed_wheels()}
    assert shipped == installed and {"visionforge", "visionforge_aws"} <= shipped
    (request,) = recorded(cloud.endpoint, "RunInstances")
    script = base64.b64decode(request["UserData"]).decode()
    for wheel in ec2_userdata.installed_wheels():
        assert wheel.pin in script


def test_the_resnet50_ec2_spot_example_is_the_recipe_with_a_runner_change() -> None:
    folder = Path(__file__).parents[3] / "examples" / "resnet50_imagenet"
    local = yaml.safe_load((folder / "recipe.yaml").read_text())
    spot = yaml.safe_load((folder / "ec2_spot.yaml").read_text())
    runner = spot.pop("runner")
    assert runner["type"] == "ec2" and runner["spot"] and runner["restart_on_interruption"]
    Ec2RunnerConfig(**{k: v for k, v in runner.items() if k != "type"})
    for split in ("train", "val"):
        assert spot["data"][split].pop("root").startswith("s3://")
        del local["data"][split]["root"]
    assert {**spot, "name": local["name"]} == {k: v for k, v in local.items() if k != "runner"}
    recipe = recipe_from_dict(yaml.safe_load((folder / "ec2_spot.yaml").read_text()))
    assert recipe.runner.type == "ec2"


class InstanceMetadata:
    """IMDSv2 on loopback for the one instance the agent runs on: a token by PUT, then its id
    and region; no spot notice (404)."""

    def __init__(self, instance_id: str) -> None:
        answers = {
            "/latest/meta-data/instance-id": instance_id,
            "/latest/meta-data/placement/region": "us-east-1",
        }

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: str = "") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body.encode())))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self) -> None:
                self._send(200, "token")

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != "token":
                    return self._send(401)
                answer = answers.get(self.path)
                self._send(404) if answer is None else self._send(200, answer)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.mark.slow
def test_the_agent_trains_a_submitted_run_and_terminates_its_instance(
    cloud: Cloud, wheels: Path, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the instance does after set-up: the agent reads the recipe.json the runner wrote,
    trains, writes DONE and terminates its instance; the handle then reports completed, the
    billed cost is final and in the manifest, and artifacts() brings the checkpoint home."""
    handle = submit(tiny_recipe(ec2_runner(s3_bucket, cloud, wheels)))
    metadata_server = InstanceMetadata(handle.record.state["instance_id"])
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", metadata_server.endpoint)
    try:
        assert agent.run_agent(handle.url, tmp_path / "work", poll_s=0.2) == 0
    finally:
        metadata_server.close()
    (instance,) = cloud.instances()
    assert instance["State"]["Name"] == "terminated"  # terminate_when_done
    assert handle.status() == "completed"
    done = json.loads(storage.read_text(f"{handle.url}/{agent.DONE}"))
    assert done["metrics"] and handle.result() == {k: float(v) for k, v in done["metrics"].items()}
    cost = records.load(handle.id).state["cost"]
    assert cost["final"]
    assert json.loads(storage.read_text(f"{handle.url}/output/manifest.json"))["cost"] == cost
    files = {Path(p).name for p in handle.artifacts()}
    assert {"last.ckpt", "manifest.json"} <= files
