"""``visionforge aws publish`` on a real S3 (SeaweedFS): layout, project manifest, lineage read
back from S3, idempotency; the model registry and lifecycle rules on moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionforge import cli, lineage
from visionforge.errors import ConfigError, StorageError
from visionforge.runners import records
from visionforge_aws import publish_aws
from visionforge_aws.publish import PROJECT_MANIFEST, PublishError, publish


def _file(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def distilled_run(root: Path) -> dict[str, str]:
    """A dataset (declaring its licence), a teacher checkpoint trained on it in another run,
    and a student run distilled from the teacher: last/best/per-epoch checkpoints, an ONNX
    export of best.ckpt, the run manifest with its cost, recipe.json and metrics.csv (tiny
    stand-in files: publishing reads manifests and bytes, never the models)."""
    data = _file(root / "coco" / "annotations.json", b'{"images": []}')
    lineage.write_manifest(data, "dataset", extra={"license": "CC-BY-4.0"})
    teacher = _file(root / "teacher-run" / "best.ckpt", b"teacher weights")
    lineage.write_manifest(teacher, "checkpoint", parents=[data], metrics={"top1": 0.9})
    run = root / "student-run"
    for name, content in (("epoch_0001.ckpt", b"e1"), ("last.ckpt", b"s-last")):
        ckpt = _file(run / name, content)
        lineage.write_manifest(ckpt, "checkpoint", parents=[teacher, data], metrics={"top1": 0.7})
    best = _file(run / "best.ckpt", b"student weights")
    foreign = _file(root / "downloaded" / "backbone.pth", b"weights without a manifest")
    lineage.write_manifest(
        best, "checkpoint", parents=[teacher, data, foreign], metrics={"top1": 0.8}
    )
    onnx_path = _file(run / "best.onnx", b"graph")  # the bytes do not matter to publishing
    lineage.write_manifest(onnx_path, "onnx", parents=[best], metrics={"max_abs_diff": 1e-6})
    _file(run / "recipe.json", json.dumps({"model": {"type": "timm"}}).encode())
    _file(run / "metrics.csv", b"epoch,top1\n1,0.8\n")
    _file(run / "training_curves.png", b"\x89PNG stand-in")
    cost = {"wall_seconds": 12.5, "device": "cpu", "processes": 1}
    lineage.write_manifest(
        str(run),
        "run",
        parents=[teacher, data],
        metrics={"top1": 0.8},
        cost=cost,
        extra={"checkpoints": {"last": str(run / "last.ckpt"), "best": best}},
    )
    return {"data": data, "teacher": teacher, "run": str(run), "best": best, "onnx": onnx_path}


def objects(prefix: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    root = prefix.removeprefix("s3://")
    return {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


@pytest.mark.slow
def test_publish_layout_lineage_and_second_run_changes_nothing(
    s3_bucket: str, s3_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = distilled_run(tmp_path)
    prefix = f"{s3_bucket}/projects/cards"
    args = ["aws", "publish", made["run"], "--to", prefix, "--name", "student", "--quiet"]
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    assert "published student 1:" in out
    foreign = str(tmp_path / "downloaded" / "backbone.pth")
    assert f"models/student/1/best.ckpt: parent {foreign} not published (no manifest)" in err
    stored = objects(prefix)
    ids = {k: lineage.read_manifest(v)["id"] for k, v in made.items()}
    version = "models/student/1/"
    expected = {
        version + name
        for name in (
            "manifest.json",
            "best.ckpt",
            "best.ckpt.manifest.json",
            "last.ckpt",
            "last.ckpt.manifest.json",
            "best.onnx",
            "best.onnx.manifest.json",
            "recipe.json",
            "metrics.csv",
            "training_curves.png",
            "metrics.json",
        )
    }
    expected |= {
        f"{version}lineage/{ids['teacher']}/best.ckpt",
        f"{version}lineage/{ids['teacher']}/best.ckpt.manifest.json",
        f"data/{ids['data']}/annotations.json",
        f"data/{ids['data']}/annotations.json.manifest.json",
        PROJECT_MANIFEST,
    }
    published = {k for k in stored if not k.endswith(".visionforge-sync.json")}
    assert published == expected
    assert stored[version + "best.ckpt"] == b"student weights"

    project = json.loads(stored[PROJECT_MANIFEST])
    by_id = {a["id"]: a for a in project["artifacts"]}
    onnx_entry = by_id[ids["onnx"]]
    assert onnx_entry["key"] == version + "best.onnx" and onnx_entry["kind"] == "onnx"
    assert onnx_entry["parents"] == [ids["best"]]
    assert onnx_entry["size"] == len(stored[version + "best.onnx"])
    assert by_id[ids["best"]]["parents"] == [ids["teacher"], ids["data"]]
    unresolved = {"path": foreign, "id": None, "reason": "no manifest"}
    assert by_id[ids["best"]]["unresolved_parents"] == [unresolved]  # listed, not dropped
    assert by_id[ids["best"]]["metrics"] == {"top1": 0.8}
    assert by_id[ids["data"]]["license"] == "CC-BY-4.0"  # declared in its manifest
    assert by_id[ids["teacher"]]["license"] == "unknown"  # declared nowhere: not invented
    entry = project["models"]["student"]["1"]
    assert entry["model"] == ids["best"] and entry["run"] == ids["run"]
    assert entry["cost"] == {"wall_seconds": 12.5, "device": "cpu", "processes": 1}
    assert not any("epoch_" in k for k in stored)  # per-epoch checkpoints stay behind

    # the chain, read back from S3 by identity: ONNX -> student -> teacher -> dataset
    assert cli.main(["lineage", f"{prefix}/{version}best.onnx"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"onnx {ids['onnx']} {prefix}/{version}best.onnx sha256:")
    assert lines[1].startswith(f"<- checkpoint {ids['best']} {prefix}/{version}best.ckpt")
    teacher_url = f"{prefix}/{version}lineage/{ids['teacher']}/best.ckpt"
    assert lines[2].startswith(f"  <- checkpoint {ids['teacher']} {teacher_url}")
    assert lines[3].startswith(f"    <- dataset {ids['data']} {prefix}/data/{ids['data']}/")
    assert len(lines) == 4

    # a fresh process with nothing but the standard AWS configuration (AWS_ENDPOINT_URL)
    env = {k: v for k, v in os.environ.items() if "ENDPOINT" not in k}
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint
    command = [sys.executable, "-m", "visionforge.cli", "lineage", f"{prefix}/{version}best.onnx"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lines

    assert cli.main(["lineage", f"{prefix}/{version}"]) == 0  # the run, by its folder
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"run {ids['run']} {prefix}/{version.rstrip('/')}")
    assert lines[1].startswith(f"<- checkpoint {ids['teacher']} {teacher_url}")

    # again, naming the run by its id: nothing uploaded, the project manifest byte-identical
    records.RunRecord("student-run-1", {"type": "local"}, "recipe.yaml", made["run"]).save()
    report = publish(["student-run-1"], prefix, "student", progress=False)
    assert (report.version, report.uploaded) == ("1", [])
    assert report.skipped == len(published)
    again = objects(prefix)
    assert again[PROJECT_MANIFEST] == stored[PROJECT_MANIFEST]
    assert again == stored


@pytest.mark.slow
def test_a_published_version_is_immutable(s3_bucket: str, tmp_path: Path) -> None:
    made = distilled_run(tmp_path)
    prefix = f"{s3_bucket}/p"
    publish([made["onnx"], made["best"]], prefix, "m", "v1", progress=False)
    other = _file(tmp_path / "other" / "best.onnx", b"another graph")
    lineage.write_manifest(other, "onnx", parents=[made["best"]])
    with pytest.raises(PublishError, match=r"models/m/v1/best.onnx: already published as onnx"):
        publish([other, made["best"]], prefix, "m", "v1", progress=False)
    report = publish([other, made["best"]], prefix, "m", progress=False)
    assert report.version == "1"
    project = json.loads(objects(prefix)[PROJECT_MANIFEST])
    assert set(project["models"]["m"]) == {"v1", report.version}


def test_bad_inputs_are_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = distilled_run(tmp_path)
    Path(made["best"]).write_bytes(b"tampered")
    assert cli.main(["aws", "publish", made["best"], "--to", "s3://b/p", "--name", "m"]) == 2
    err = capsys.readouterr().err
    assert "changed since its manifest was written" in err and err.count("\n") == 1
    bare = _file(tmp_path / "bare.onnx", b"x")
    with pytest.raises(PublishError, match="no visionforge manifest"):
        publish([bare], "s3://b/p", "m", progress=False)
    with pytest.raises(PublishError, match="must be an s3://bucket/prefix"):
        publish([made["onnx"]], "/local/folder", "m", progress=False)
    with pytest.raises(PublishError, match="--name 'a b'"):
        publish([made["onnx"]], "s3://b/p", "a b", progress=False)


# ----------------------------------------------------------------------------- moto


@pytest.mark.slow
def test_model_package_is_registered_once(
    s3_bucket: str, sagemaker_env: Any, tmp_path: Path
) -> None:
    made = distilled_run(tmp_path)
    prefix = f"{s3_bucket}/registry"
    first = publish([made["run"]], prefix, "student", model_package_group="cards", progress=False)
    assert first.model_package_created and first.model_package_arn
    (group,) = sagemaker_env.recorded("CreateModelPackageGroup")
    assert group["ModelPackageGroupName"] == "cards"
    (request,) = sagemaker_env.recorded("CreateModelPackage")
    container = request["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataSource"]["S3DataSource"] == {
        "S3Uri": f"{prefix}/models/student/1/",
        "S3DataType": "S3Prefix",
        "CompressionType": "None",
    }
    assert container["Image"].endswith("/pytorch-inference:2.5.1-cpu-py311")
    statistics = request["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["S3Uri"] == f"{prefix}/models/student/1/metrics.json"
    metrics = json.loads(objects(prefix)["models/student/1/metrics.json"])
    assert metrics == {
        "artifact": lineage.read_manifest(made["best"])["id"],
        "metrics": {"top1": 0.8},
    }
    assert request["CustomerMetadataProperties"]["visionforge:version"] == "1"
    assert 1 <= len(request["ClientToken"]) <= 36  # SageMaker's limit (moto does not check)
    stored = objects(prefix)[PROJECT_MANIFEST]
    project = json.loads(stored)
    assert project["models"]["student"]["1"]["model_package"]["arn"] == first.model_package_arn

    second = publish([made["run"]], prefix, "student", model_package_group="cards", progress=False)
    assert (second.model_package_arn, second.model_package_created) == (
        first.model_package_arn,
        False,
    )
    assert len(sagemaker_env.recorded("CreateModelPackage")) == 1
    assert second.uploaded == [] and objects(prefix)[PROJECT_MANIFEST] == stored


def bucket_rules(client: Any) -> list[dict[str, Any]]:
    return list(client.get_bucket_lifecycle_configuration(Bucket="lifecycle")["Rules"])


@pytest.mark.slow  # boto3 clients and moto: ~15 s on a loaded 2-core machine
def test_lifecycle_rules_merge_by_id(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3")
    client.create_bucket(Bucket="lifecycle")
    theirs = {
        "ID": "their-rule",
        "Status": "Enabled",
        "Filter": {"Prefix": "logs/"},
        "Expiration": {"Days": 90},
    }
    client.put_bucket_lifecycle_configuration(
        Bucket="lifecycle", LifecycleConfiguration={"Rules": [theirs]}
    )
    plan = publish_aws.plan_lifecycle(
        "s3://lifecycle/projects", ["s3://lifecycle/jobs", "runs/"], 30, "GLACIER"
    )
    assert publish_aws.apply_lifecycle(plan) is True
    rules = {
        r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket="lifecycle")["Rules"]
    }
    assert rules["their-rule"]["Expiration"] == {"Days": 90}
    abort = rules[publish_aws.ABORT_RULE_ID]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    archived = {
        r["Filter"]["Prefix"]: r["Transitions"] for r in rules.values() if "Transitions" in r
    }
    assert archived == {
        "jobs/": [{"Days": 30, "StorageClass": "GLACIER"}],
        "runs/": [{"Days": 30, "StorageClass": "GLACIER"}],
    }
    assert publish_aws.apply_lifecycle(plan) is False  # nothing to change the second time
    longer = publish_aws.plan_lifecycle("s3://lifecycle/p", ["jobs"], 60, "DEEP_ARCHIVE")
    assert publish_aws.apply_lifecycle(longer) is True
    rules = {
        r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket="lifecycle")["Rules"]
    }
    assert len(rules) == 4  # the jobs/ rule replaced by ID, the others kept
    with pytest.raises(ConfigError, match="one bucket"):
        publish_aws.plan_lifecycle("s3://a/p", ["s3://b/jobs"], 30, "GLACIER")
    missing = publish_aws.plan_lifecycle("s3://no-such-bucket/p", [], 30, "GLACIER")
    with pytest.raises(StorageError, match="^--lifecycle: bucket no-such-bucket: NoSuchBucket: "):
        publish_aws.apply_lifecycle(missing)


rule_ids = st.sampled_from(["a", "b", publish_aws.ABORT_RULE_ID, "visionforge-archive-x"])
rules = st.lists(
    st.builds(
        lambda rule_id, days: {
            "ID": rule_id,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": days},
        },
        rule_ids,
        st.integers(1, 400),
    ),
    unique_by=lambda rule: rule["ID"],
    max_size=4,
)


@settings(deadline=None)  # a loaded machine must not turn a pause into a failure
@given(existing=rules, prefixes=st.lists(st.sampled_from(["jobs", "runs/old"]), max_size=2))
def test_merging_keeps_other_rules_and_is_idempotent(
    existing: list[dict[str, Any]], prefixes: list[str]
) -> None:
    ours = publish_aws.plan_lifecycle("s3://bucket/p", prefixes, 30, "GLACIER").rules()
    merged = publish_aws.merge_rules(existing, ours)
    our_ids = {rule["ID"] for rule in ours}
    assert [r for r in merged if r["ID"] not in our_ids] == [
        r for r in existing if r["ID"] not in our_ids
    ]
    assert [r for r in merged if r["ID"] in our_ids] == ours
    again = publish_aws.merge_rules(merged, ours)
    assert publish_aws._canonical(again) == publish_aws._canonical(merged)
    # S3 answers an empty prefix filter as {}: still the same rules, no second PUT
    answered = [{**r, "Filter": {}} if r["Filter"] == {"Prefix": ""} else r for r in merged]
    assert publish_aws._canonical(answered) == publish_aws._canonical(merged)
