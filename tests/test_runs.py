"""The run registry and `visionforge runs`: records, attach, status, logs, stop, detach."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from visionforge import cli
from visionforge.interfaces import RunHandle
from visionforge.runners import RunFailedError, records
from visionforge.runners.local import RecordedRun
from visionforge.runners.records import RunRecord, UnknownRunError


def recipe_file(folder: Path, epochs: int = 1, **trainer: Any) -> Path:
    data = {
        "name": "tiny",
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 4},
        "data": {
            "train": {"type": "synthetic_classification", "num_samples": 16, "image_size": 16},
        },
        "optimizer": {"type": "sgd", "lr": 0.05},
        "trainer": {
            "epochs": epochs,
            "batch_size": 4,
            "device": "cpu",
            "output": str(folder / "run"),
            "loggers": ["csv"],
            **trainer,
        },
        "runner": {"type": "local"},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def record(run_id: str, **state: Any) -> RunRecord:
    rec = RunRecord(
        id=run_id, runner={"type": "local", "nproc": 1}, recipe="r", output="/x", state=state
    )
    rec.save()
    return rec


def test_run_ids_are_valid_job_names() -> None:
    run_id = records.new_run_id("My recipe/v2 (test)" * 4)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", run_id), run_id
    assert run_id != records.new_run_id("My recipe/v2 (test)" * 4)


def test_unknown_run_names_the_registry(visionforge_home: Path) -> None:
    with pytest.raises(UnknownRunError, match=f"run nope: no record in {visionforge_home}"):
        records.attach("nope")
    with pytest.raises(UnknownRunError, match="not a run id"):
        records.load("../etc/passwd")
    assert cli.main(["runs", "status", "nope"]) == 2


def test_attach_a_running_process_then_stop_it() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        record("live-1", status="running", pid=sleeper.pid)
        handle = records.attach("live-1")
        assert isinstance(handle, RunHandle) and isinstance(handle, RecordedRun)
        assert handle.id == "live-1" and handle.status() == "running"
        assert handle.wait(timeout=0.2) == "running"
        handle.stop()
        assert sleeper.wait(timeout=60) == -signal.SIGTERM
        # the process ended without writing a final status: failed, and the error says so
        assert handle.status() == "failed"
        assert isinstance(handle.error(), RunFailedError)
        assert "ended without recording a result" in str(handle.error())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_finished_record_answers_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.log"
    log.write_text("epoch 1/1 done\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.ckpt").write_bytes(b"x")
    rec = record("done-1", status="completed", metrics={"val/top1": 0.5}, log=str(log))
    rec.output = str(out)
    rec.save()
    assert cli.main(["runs", "status", "done-1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "completed"
    assert cli.main(["runs", "logs", "done-1", "--follow"]) == 0
    assert capsys.readouterr().out == "epoch 1/1 done\n"
    assert cli.main(["runs", "artifacts", "done-1"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "last.ckpt")
    assert cli.main(["runs", "stop", "done-1"]) == 0
    assert "already completed" in capsys.readouterr().out
    assert cli.main(["runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "done-1" in listing and "completed" in listing
    handle = records.attach("done-1")
    assert handle.result() == {"val/top1": 0.5} and handle.error() is None


def test_failed_in_process_run_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recipe_file(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["data"]["train"] = {"type": "image_folder", "root": str(tmp_path / "missing")}
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(path)]) == 2
    capsys.readouterr()
    (rec,) = records.all_records()
    assert rec.state["status"] == "failed" and "missing" in rec.state["error"]
    assert cli.main(["runs", "status", rec.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith("failed\n") and "missing" in out


@pytest.mark.slow
def test_detached_run_completes_and_is_reachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["train", str(recipe_file(tmp_path)), "--detach"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    handle = records.attach(run_id)
    assert handle.wait(timeout=300) == "completed", handle.logs()[-3000:]
    assert cli.main(["runs", "logs", run_id, "--follow"]) == 0
    assert '"stopped_by_signal": false' in capsys.readouterr().out  # the worker's summary
    assert "train/loss" in (handle.result() or {})
    names = {Path(p).name for p in handle.artifacts()}
    assert {"last.ckpt", "torchrun.log"} <= names


@pytest.mark.slow
def test_detached_run_stops_with_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recipe_file(tmp_path, epochs=500)
    assert cli.main(["train", str(path), "--detach"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    handle = records.attach(run_id)
    deadline = time.monotonic() + 300
    metrics = Path(records.load(run_id).output) / "metrics.csv"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:
        assert handle.status() in ("pending", "running"), handle.logs()[-3000:]
        assert time.monotonic() < deadline, handle.logs()[-3000:]
        time.sleep(0.5)
    assert cli.main(["runs", "stop", run_id]) == 0
    assert handle.wait(timeout=300) == "stopped", handle.logs()[-3000:]
    output = Path(records.load(run_id).output)
    assert (output / "last.ckpt").exists()
    assert json.loads((output / "manifest.json").read_text())["kind"]
