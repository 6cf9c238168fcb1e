"""The SageMaker runner: configuration, costs, safe artifacts, input checks, the request sent to
a moto control plane, the bundle on a real S3 (SeaweedFS), and the in-container entry."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import fsspec
import pytest
import torch
import yaml
from pydantic import ValidationError
from torchvision.io import write_png

from visionforge import cli
from visionforge.config import recipe_from_dict
from visionforge.errors import ConfigError, StorageError
from visionforge.runners import records
from visionforge_aws import costs, entry, safetar
from visionforge_aws.configs import SageMakerRunnerConfig
from visionforge_aws.sagemaker import SageMakerRunner

ROLE = "arn:aws:iam::123456789012:role/visionforge-sagemaker"


def image_folder(root: Path, per_class: int = 4) -> Path:
    """A tiny ImageFolder: 2 classes of 16x16 PNGs."""
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shade = 40 if label == "cat" else 200
            image = torch.full((3, 16, 16), shade + i, dtype=torch.uint8)
            write_png(image, str(root / label / f"{i}.png"))
    return root


def recipe_data(train: dict[str, Any], runner: dict[str, Any], output: str) -> dict[str, Any]:
    return {
        "name": "tiny-sm",
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 2},
        "data": {"train": train},
        "optimizer": {"type": "sgd", "lr": 0.05},
        "trainer": {
            "epochs": 1,
            "batch_size": 4,
            "device": "cpu",
            "output": output,
            "loggers": ["csv"],
        },
        "runner": runner,
    }


def sm_runner(**fields: Any) -> dict[str, Any]:
    return {"type": "sagemaker", "role": ROLE, "output": "s3://bucket/jobs", **fields}


# ----------------------------------------------------------------------------- configuration


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ValidationError, match="max_wait: 100 must be >= max_run 3600"):
        SageMakerRunnerConfig(role=ROLE, output="s3://b/o", spot=True, max_run=3600, max_wait=100)
    with pytest.raises(ValidationError, match="max_wait: only for spot"):
        SageMakerRunnerConfig(role=ROLE, output="s3://b/o", max_wait=7200)
    with pytest.raises(ValidationError, match="environment.AWS_SECRET_ACCESS_KEY: looks like"):
        SageMakerRunnerConfig(
            role=ROLE, output="s3://b/o", environment={"AWS_SECRET_ACCESS_KEY": "x"}
        )
    with pytest.raises(ValidationError, match="output: 'out' must be an s3:// prefix"):
        SageMakerRunnerConfig(role=ROLE, output="out")


def test_cost_estimate_and_billed_cost() -> None:
    table = costs.price_table()
    seeds = {"ml.g4dn.xlarge", "ml.g5.2xlarge", "ml.p4d.24xlarge"}
    assert seeds <= set(table["on_demand_per_hour"])
    price = table["on_demand_per_hour"]["ml.g5.2xlarge"]
    estimate = costs.estimate("ml.g5.2xlarge", 2, 5400, spot=True)
    assert estimate.on_demand == pytest.approx(2 * 1.5 * price)
    assert estimate.spot == pytest.approx(estimate.on_demand * (1 - table["spot_savings"]))
    assert table["date"] in estimate.describe()
    job = {
        "BillableTimeInSeconds": 1800,
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2},
        "EnableManagedSpotTraining": True,
    }
    billed = costs.billed_cost(job)
    assert billed is not None and billed["usd"] == pytest.approx(1800 * 2 * price / 3600, 1e-3)
    assert costs.billed_cost({"ResourceConfig": job["ResourceConfig"]}) is None
    with pytest.raises(ConfigError, match="runner.instance_type: no price for ml.x9.huge"):
        costs.estimate("ml.x9.huge", 1, 60, spot=False)


# ----------------------------------------------------------------------------- artifacts


def tar_with(path: Path, build: Any) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def add_device(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("traversal", lambda t: add_file(t, "../evil.txt")),
        ("absolute", lambda t: add_file(t, "/tmp/evil-absolute.txt")),
        ("symlink-out", lambda t: add_link(t, "passwd", "/etc/passwd", tarfile.SYMTYPE)),
        ("symlink-up", lambda t: add_link(t, "up", "../../outside", tarfile.SYMTYPE)),
        ("hardlink-out", lambda t: add_link(t, "hard", "/etc/passwd", tarfile.LNKTYPE)),
        ("device", lambda t: add_device(t, "null", "", tarfile.CHRTYPE)),
    ],
)
def test_malicious_tar_is_refused(tmp_path: Path, name: str, build: Any) -> None:
    def with_good_member(tar: tarfile.TarFile) -> None:
        add_file(tar, "model/last.ckpt", b"weights")
        build(tar)

    archive = tar_with(tmp_path / f"{name}.tar.gz", with_good_member)
    target = tmp_path / "out"
    with pytest.raises(StorageError, match="unsafe member refused"):
        safetar.extract(archive, target)
    assert not any(target.rglob("*")), "nothing is written from a refused archive"
    assert not (tmp_path / "evil.txt").exists()


def test_safe_tar_extracts_regular_members(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add_file(tar, "last.ckpt", b"weights")
        add_file(tar, "manifest.json", b"{}")
        add_link(tar, "best.ckpt", "last.ckpt", tarfile.SYMTYPE)  # inside: allowed

    files = safetar.extract(tar_with(tmp_path / "ok.tar.gz", build), tmp_path / "out")
    assert [f.name for f in files] == ["last.ckpt", "manifest.json"]
    assert (tmp_path / "out" / "best.ckpt").read_bytes() == b"weights"


# ----------------------------------------------------------------------------- inputs


def test_local_inputs_are_refused_naming_each_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = {"type": "image_folder", "root": str(image_folder(tmp_path / "train"))}
    data = recipe_data(train, sm_runner(), str(tmp_path / "run"))
    data["trainer"]["init_checkpoint"] = str(tmp_path / "init.ckpt")
    recipe = recipe_from_dict(data)
    runner = SageMakerRunner(SageMakerRunnerConfig(role=ROLE, output="s3://bucket/jobs"))
    with pytest.raises(ConfigError) as caught:
        runner.plan_inputs(recipe, "s3://bucket/jobs/run-1")
    message = str(caught.value)
    assert f"data.train.root: {tmp_path / 'train'}" in message
    assert f"trainer.init_checkpoint: {tmp_path / 'init.ckpt'}" in message
    assert "--upload-local" in message
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(path)]) == 2
    assert "data.train.root" in capsys.readouterr().err


def test_container_recipe_maps_channels_and_ranks(tmp_path: Path) -> None:
    bundle = tmp_path / "code"
    bundle.mkdir()
    data = recipe_data({"type": "image_folder", "root": "/home/me/train"}, {}, "/home/me/run")
    data["trainer"]["init_checkpoint"] = "/home/me/init.ckpt"
    (bundle / "recipe.json").write_text(json.dumps(data))
    fields = {
        "data-train-root": ["data.train.root", False],
        "trainer-init_checkpoint": ["trainer.init_checkpoint", True],
    }
    (bundle / "entry.json").write_text(json.dumps({"fields": fields, "master_port": 1}))
    channels = tmp_path / "input" / "data"
    (channels / "trainer-init_checkpoint").mkdir(parents=True)
    (channels / "trainer-init_checkpoint" / "init.ckpt").write_bytes(b"w")
    env = {
        "SM_CHANNEL_DATA_TRAIN_ROOT": str(channels / "data-train-root"),
        "SM_CHANNEL_TRAINER_INIT_CHECKPOINT": str(channels / "trainer-init_checkpoint"),
        "VISIONFORGE_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "SM_INPUT_CONFIG_DIR": str(tmp_path / "config"),
        "SM_NUM_GPUS": "4",
    }
    mapped = entry.container_recipe(bundle, env)
    assert mapped["data"]["train"]["root"] == str(channels / "data-train-root")
    assert mapped["trainer"]["init_checkpoint"] == str(
        channels / "trainer-init_checkpoint" / "init.ckpt"
    )
    assert mapped["trainer"]["output"] == str(tmp_path / "checkpoints")
    (tmp_path / "config").mkdir()
    resource = {"current_host": "algo-2", "hosts": ["algo-2", "algo-10", "algo-1"]}
    (tmp_path / "config" / "resourceconfig.json").write_text(json.dumps(resource))
    assert entry.cluster(env) == (["algo-1", "algo-10", "algo-2"], 2, 4)


# ----------------------------------------------------------------------------- moto + S3


@pytest.mark.slow
def test_submit_sends_every_field_and_a_clean_bundle(
    s3_bucket: str,
    sagemaker_env: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "visionforge-secret"  # the loopback S3 server's key, in the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    train = {"type": "image_folder", "root": str(image_folder(tmp_path / "train"))}
    runner = sm_runner(
        output=f"{s3_bucket}/jobs",
        instance_type="ml.g5.2xlarge",
        instance_count=2,
        spot=True,
        max_run=7200,
        max_wait=10800,
        volume_gb=30,
        region="us-east-1",
        channels={"extra": f"{s3_bucket}/extra"},
        environment={"MY_FLAG": "1"},
        tags={"team": "vision"},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_data(train, runner, str(tmp_path / "run"))))
    assert cli.main(["train", str(path), "--upload-local", "--detach"]) == 0
    out, err = capsys.readouterr()
    run_id = out.strip().splitlines()[-1]
    assert f"data.train.root: uploaded {tmp_path / 'train'} to {s3_bucket}/jobs/{run_id}" in err
    assert "at most $" in err and "with spot" in err
    (request,) = sagemaker_env.recorded("CreateTrainingJob")
    prefix = f"{s3_bucket}/jobs/{run_id}"
    assert request == {
        "TrainingJobName": run_id,
        "HyperParameters": {
            "sagemaker_program": '"visionforge_entry.py"',
            "sagemaker_submit_directory": json.dumps(f"{prefix}/source/sourcedir.tar.gz"),
            "sagemaker_region": '"us-east-1"',
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": json.dumps(run_id),
        },
        "AlgorithmSpecification": {
            "TrainingImage": (
                "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311"
            ),
            "TrainingInputMode": "File",
        },
        "RoleArn": ROLE,
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
            for name, uri in [
                ("data-train-root", f"{prefix}/inputs/data-train-root"),
                ("extra", f"{s3_bucket}/extra"),
            ]
        ],
        "OutputDataConfig": {"S3OutputPath": f"{s3_bucket}/jobs"},
        "ResourceConfig": {
            "InstanceType": "ml.g5.2xlarge",
            "InstanceCount": 2,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"{prefix}/checkpoints", "LocalPath": "/opt/ml/checkpoints"},
        "Environment": {"MY_FLAG": "1", "VISIONFORGE_CHECKPOINT_DIR": "/opt/ml/checkpoints"},
        "Tags": [
            {"Key": "team", "Value": "vision"},
            {"Key": "visionforge:run-id", "Value": run_id},
        ],
    }
    assert not any("distributed" in key for key in request["HyperParameters"])
    # the inputs arrived, and the bundle holds what the container needs, and no secret
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    uploaded = fs.find(f"{prefix.removeprefix('s3://')}/inputs/data-train-root")
    assert sum(p.endswith(".png") for p in uploaded) == 8
    bundle = tmp_path / "sourcedir.tar.gz"
    fs.get_file(f"{prefix.removeprefix('s3://')}/source/sourcedir.tar.gz", str(bundle))
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        contents = {n: tar.extractfile(n).read() for n in names if tar.getmember(n).isfile()}  # type: ignore[union-attr]
    assert {"visionforge_entry.py", "recipe.json", "entry.json"} <= set(names)
    assert "requirements.txt" not in names
    wheels = {n.split("/")[1].split("-")[0] for n in names if n.startswith("wheels/")}
    assert {"visionforge", "visionforge_aws"} <= wheels
    assert b"--no-index" in contents["visionforge_entry.py"]
    assert json.loads(contents["recipe.json"])["runner"] == {"type": "local"}
    assert json.loads(contents["entry.json"])["fields"]["data-train-root"] == [
        "data.train.root",
        False,
    ]
    for name, data in contents.items():
        assert secret.encode() not in data, name
    # the run is reachable by id; moto completes jobs at once and has no StopTrainingJob
    record = records.load(run_id)
    assert record.state["status"] == "running" and secret not in record.path.read_text()
    assert cli.main(["runs", "status", run_id]) == 0
    assert capsys.readouterr().out.startswith("completed")
    handle = records.attach(run_id)
    with pytest.raises(Exception, match="StopTrainingJob"):
        handle.stop()
    assert sagemaker_env.recorded("StopTrainingJob")[0] == {"TrainingJobName": run_id}
    assert secret not in record.path.read_text() and secret not in out + err


# ----------------------------------------------------------------------------- in the container


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_entry_trains_across_two_hosts(tmp_path: Path) -> None:
    """Two simulated instances (own /opt/ml trees, SM_* env, resourceconfig.json) run the
    bundled recipe under torchrun; the first host publishes the model into SM_MODEL_DIR."""
    import os
    import subprocess
    import sys

    bundle = tmp_path / "code"
    bundle.mkdir()
    train = {"type": "synthetic_classification", "num_classes": 2, "num_samples": 16}
    train["image_size"] = 16
    data = recipe_data(train, {"type": "local"}, "/ignored")
    (bundle / "recipe.json").write_text(json.dumps(data))
    (bundle / "entry.json").write_text(json.dumps({"fields": {}, "master_port": free_port()}))
    hosts = ["localhost", "127.0.0.1"]  # sorted: 127.0.0.1 is the first host (the master)
    processes = []
    for host in hosts:
        ml = tmp_path / host / "opt" / "ml"
        (ml / "input" / "config").mkdir(parents=True)
        resource = {"current_host": host, "hosts": hosts, "network_interface_name": "lo"}
        (ml / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
        env = {
            **os.environ,
            "SM_INPUT_CONFIG_DIR": str(ml / "input" / "config"),
            "SM_MODEL_DIR": str(ml / "model"),
            "SM_OUTPUT_DATA_DIR": str(ml / "output" / "data"),
            "SM_NUM_GPUS": "0",
            "VISIONFORGE_CHECKPOINT_DIR": str(ml / "checkpoints"),
        }
        command = [sys.executable, "-m", "visionforge.cli", "aws", "sagemaker-entry"]
        processes.append(
            subprocess.Popen(
                [*command, "--bundle", str(bundle)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    master = tmp_path / "127.0.0.1" / "opt" / "ml"
    published = {p.name for p in (master / "model").iterdir()}
    assert {"last.ckpt", "manifest.json"} <= published, outputs
    assert not (tmp_path / "localhost" / "opt" / "ml" / "model").exists()
    assert "host 1/2" in outputs[1] and "host 2/2" in outputs[0]
