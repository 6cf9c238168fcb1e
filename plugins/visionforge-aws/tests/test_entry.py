"""``visionforge aws sagemaker-entry`` in a simulated container: SIGTERM mid-run then a restart
ends at the weights of an uninterrupted run; the compiled op is built, loaded or replaced by
its fallback, and the log says which."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from visionforge.engine import load_checkpoint
from visionforge_aws import entry

STEPS = 24  # 3 epochs x 32 samples / batch 4
POLL_LIMIT_S = 600.0  # generous: start-up under load; not a bound on anything measured


def tiny_recipe() -> dict[str, Any]:
    return {
        "name": "entry-sigterm",
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 2},
        "data": {
            "train": {
                "type": "synthetic_classification",
                "num_classes": 2,
                "num_samples": 32,
                "image_size": 16,
            },
            "loader": {"num_workers": 0},
        },
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "trainer": {
            "epochs": 3,
            "batch_size": 4,
            "device": "cpu",
            "seed": 0,
            "checkpoint_every_steps": 1,
            "output": "/ignored",
            "loggers": ["csv"],
        },
        "runner": {"type": "local"},
    }


class Container:
    """A simulated SageMaker training container: its /opt/ml tree, bundle and environment."""

    def __init__(self, root: Path) -> None:
        self.ml = root / "opt" / "ml"
        self.bundle = root / "code"
        self.bundle.mkdir(parents=True)
        (self.bundle / "recipe.json").write_text(json.dumps(tiny_recipe()))
        (self.bundle / "entry.json").write_text(json.dumps({"fields": {}, "master_port": 29500}))
        config = self.ml / "input" / "config"
        config.mkdir(parents=True)
        resource = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"}
        (config / "resourceconfig.json").write_text(json.dumps(resource))
        self.checkpoints = self.ml / "checkpoints"
        self.model = self.ml / "model"
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "SM_INPUT_CONFIG_DIR": str(config),
            "SM_MODEL_DIR": str(self.model),
            "SM_OUTPUT_DATA_DIR": str(self.ml / "output" / "data"),
            "SM_NUM_GPUS": "0",
            "VISIONFORGE_CHECKPOINT_DIR": str(self.checkpoints),
        }

    def start(self) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "visionforge.cli", "aws", "sagemaker-entry"]
        return subprocess.Popen(
            [*command, "--bundle", str(self.bundle)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def checkpoint_step(self) -> int | None:
        """The global step of the newest checkpoint in /opt/ml/checkpoints, if any."""
        try:
            manifest = json.loads((self.checkpoints / "last.ckpt.manifest.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return int(manifest["position"]["global_step"])


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=POLL_LIMIT_S)
    return process.returncode, out


@pytest.mark.slow
def test_sigterm_mid_run_then_restart_ends_at_the_uninterrupted_weights(tmp_path: Path) -> None:
    straight = Container(tmp_path / "straight")
    stopped = Container(tmp_path / "stopped")
    reference = straight.start()
    interrupted = stopped.start()
    deadline = time.monotonic() + POLL_LIMIT_S
    while (stopped.checkpoint_step() or 0) < 2:  # a progress marker: a checkpoint at step 2
        assert interrupted.poll() is None, finish(interrupted)[1]
        assert time.monotonic() < deadline, "no checkpoint at step 2"
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGTERM)  # what StopTrainingJob / a spot reclaim sends
    code, out = finish(interrupted)
    assert code == 0, out
    assert "visionforge: stopped" in out, out
    step = stopped.checkpoint_step()
    assert step is not None and 2 <= step < STEPS, out  # stopped mid-run, checkpoint written
    assert (stopped.checkpoints / "last.ckpt").is_file()
    run_manifest = json.loads((stopped.checkpoints / "manifest.json").read_text())
    assert (run_manifest["status"], run_manifest["signal"]) == ("interrupted", "SIGTERM")

    code, restarted = finish(stopped.start())  # SageMaker restarts the job: same tree
    assert code == 0, restarted
    assert "resuming from " in restarted and f"(global step {step})" in restarted, restarted
    assert "visionforge: completed" in restarted
    assert "visionforge: compiled ops: none used by this model" in restarted
    code, out = finish(reference)
    assert code == 0, out
    resumed = load_checkpoint(str(stopped.model / "last.ckpt"))
    uninterrupted = load_checkpoint(str(straight.model / "last.ckpt"))
    assert resumed["position"]["global_step"] == STEPS
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


DINO = {"type": "dino_r50_4scale", "num_classes": 2}


def test_the_op_falls_back_with_one_line_when_it_cannot_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from visionforge_dino.ops import backends, build

    monkeypatch.setattr(backends, "_STATE", backends._State())  # a fresh process's knowledge
    monkeypatch.setenv("VISIONFORGE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))
    monkeypatch.setenv(backends.BACKEND_ENV, "auto")  # restored after the test
    build.find_toolchain.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="using the PyTorch reference"):
            line = entry.prepare_ops({"model": DINO, "trainer": {"device": "cpu"}})
    finally:
        build.find_toolchain.cache_clear()
    assert line.startswith("visionforge: compiled ops: falling back to the PyTorch reference (")
    assert "no C++ compiler found" in line and "\n" not in line
    assert os.environ[backends.BACKEND_ENV] == "pytorch"  # the training processes skip the build
    pinned = {"model": {**DINO, "msda_backend": "pytorch"}}
    assert entry.prepare_ops(pinned).endswith("PyTorch reference (model.msda_backend: pytorch)")
    assert entry.prepare_ops({"model": {"type": "timm", "name": "resnet18"}}).endswith(
        "none used by this model"
    )


@pytest.mark.slow
def test_the_op_is_built_then_loaded_from_the_cache(tmp_path: Path) -> None:
    """Two fresh processes (two container starts) sharing an empty cache: the first builds
    the CPU kernel, the second loads it."""
    script = (
        "from visionforge_aws.entry import prepare_ops; "
        f"print(prepare_ops({{'model': {DINO!r}, 'trainer': {{'device': 'cpu'}}}}))"
    )
    env = {**os.environ, "VISIONFORGE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("VISIONFORGE_MSDA_BACKEND", None)
    lines = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stderr
        lines.append(done.stdout.strip().splitlines()[-1])
    assert lines == [
        "visionforge: compiled ops: cpu deformable-attention kernel built",
        "visionforge: compiled ops: cpu deformable-attention kernel loaded from the cache",
    ]
