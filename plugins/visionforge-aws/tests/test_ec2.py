"""The EC2 runner against real clients on loopback: EC2, SSM and IAM on moto's server mode
(user data is stored, not run), S3 on SeaweedFS."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from pydantic import ValidationError

from visionforge import storage
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
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]
        self.ami, self.root_device = image["ImageId"], image.get("RootDeviceName") or "/dev/sda1"
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
