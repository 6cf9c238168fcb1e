"""SIGTERM at seeded random moments, on a machine loaded by CPU burners, with DataLoader
workers: every time a complete checkpoint, a run manifest saying ``interrupted`` and exit code
0 within ``STOP_BOUND_S`` seconds of the signal; under DDP (2 gloo processes) every rank stops
at the same step.

The signal goes to the whole process group (trainer and loader workers), as a spot-instance
or ``docker stop`` shutdown does. Moments are drawn from ``random.Random(trial)``: during
start-up (model and loader building, worker start) or a random delay after a random step
(mid-step, during evaluation, while a checkpoint is written). ``VISIONFORGE_SIGTERM_TRIALS``
sets how many single-process trials run (default 8).
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_engine_support import SUBPROCESS_ENV, tiny_recipe_data

from visionforge.engine import load_checkpoint
from visionforge.lineage import file_digest, read_manifest

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).parent / "test_engine_support.py"
TRIALS = int(os.environ.get("VISIONFORGE_SIGTERM_TRIALS", "8"))
STOP_BOUND_S = 60.0
"""Seconds from SIGTERM to exit (checkpoint written) that every trial must meet, with the CPUs
oversubscribed: for a signal during start-up this includes importing torch and building the
run (16-26 s measured on a 2-core machine at load 12); during training, the rest of a step, an
evaluation pass and the checkpoint."""
LINE_TIMEOUT_S = 300.0  # start-up under load (torch import) can be slow; generous, not a bound
STEPS_PER_EPOCH = 6  # 48 samples / batch 8


@pytest.fixture(scope="module")
def cpu_load() -> Iterator[int]:
    """Two busy-looping processes per core for the whole module."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    yield len(burners)
    for burner in burners:
        burner.kill()
        burner.wait()


class Run:
    """A subprocess in its own session whose stdout lines are read by a thread."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **SUBPROCESS_ENV},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str) -> str:
        """The first new output line matching ``pattern`` (fails with the output so far)."""
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        pytest.fail(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    def stop_group(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)

    def finish(self, timeout: float) -> int:
        self.process.wait(timeout)
        while (line := self._queue.get(timeout=LINE_TIMEOUT_S)) is not None:
            self.lines.append(line)
        return self.process.returncode

    def group_gone(self) -> bool:
        """True once no process of the run's session (loader workers included) is left."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        return False


def trial_recipe(tmp_path: Path, rng: random.Random) -> Path:
    data = tiny_recipe_data(
        tmp_path / "run",
        data={
            "loader": {"num_workers": 2, "persistent_workers": rng.random() < 0.5},
            "val": {"num_samples": 48},  # evaluation long enough to be hit too
        },
        trainer={
            "epochs": 200,  # never finishes: every trial is stopped
            "log_every_steps": 1,
            "checkpoint_every_steps": rng.choice([None, 1, 4]),
        },
    )
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    return path


def send_at_random_moment(run: Run, rng: random.Random) -> str:
    """Wait for a drawn moment, send SIGTERM to the group; describe the moment."""
    run.wait_for("^listening$")
    if rng.random() < 0.3:
        delay = rng.uniform(0.0, 3.0)
        time.sleep(delay)  # a drawn moment, not a wait for something to happen
        run.stop_group()
        return f"{delay:.2f}s after start-up began"
    step = rng.randint(1, 4 * STEPS_PER_EPOCH)
    delay = rng.uniform(0.0, 0.3)
    run.wait_for(f"^step {step}$")
    time.sleep(delay)
    run.stop_group()
    return f"{delay:.2f}s after step {step}"


def assert_complete_checkpoint(output: Path, note: str) -> dict[str, Any]:
    last = output / "last.ckpt"
    ckpt = load_checkpoint(str(last))  # a whole, loadable checkpoint
    manifest = read_manifest(str(last))
    assert manifest["sha256"] == file_digest(str(last))[0], note
    assert manifest["position"] == ckpt["position"], note
    run = read_manifest(str(output))
    assert run["status"] == "interrupted" and run["signal"] == "SIGTERM", note
    assert run["position"] == ckpt["position"], note
    assert not list(output.glob(".*.tmp")), note  # no temporary file left behind
    return ckpt


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigterm_at_a_random_moment_under_load(trial: int, tmp_path: Path, cpu_load: int) -> None:
    rng = random.Random(trial)
    recipe = trial_recipe(tmp_path, rng)
    run = Run([sys.executable, str(SUPPORT), str(recipe), "--report-steps"])
    moment = send_at_random_moment(run, rng)
    signalled = time.monotonic()
    code = run.finish(timeout=STOP_BOUND_S + 60)  # fail below with the measured time
    took = time.monotonic() - signalled
    note = f"trial {trial}: SIGTERM {moment}, exit {code} after {took:.1f}s\n" + "\n".join(
        run.lines[-30:]
    )
    print(note.splitlines()[0])
    assert code == 0, note
    assert took < STOP_BOUND_S, note
    assert run.group_gone(), f"loader workers outlived the trainer; {note}"
    assert not any("killed by signal" in line for line in run.lines), note
    result = json.loads(next(line for line in reversed(run.lines) if line.startswith("{")))
    assert result["stopped_by_signal"] is True, note
    ckpt = assert_complete_checkpoint(tmp_path / "run", note)
    stopped = re.search(r"rank 0 stopped at step (\d+)", "\n".join(run.lines))
    assert stopped and int(stopped.group(1)) == ckpt["position"]["global_step"], note


@pytest.mark.parametrize("trial", range(2))
def test_sigterm_under_ddp_stops_every_rank_at_the_same_step(
    trial: int, tmp_path: Path, cpu_load: int
) -> None:
    rng = random.Random(1000 + trial)
    recipe = trial_recipe(tmp_path, rng)
    data = json.loads(recipe.read_text())
    data["trainer"]["batch_size"] = 4  # 2 ranks x 4: still 6 steps an epoch
    data["data"]["loader"]["num_workers"] = 1
    # no validation split: TopKAccuracy.compute recurses under DDP (a10db76, reported);
    # the single-process trials cover stops during evaluation
    data["data"]["val"], data["evaluator"] = None, None
    recipe.write_text(json.dumps(data))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    run = Run([*launcher, "--nproc-per-node", "2", str(SUPPORT), str(recipe), "--report-steps"])
    step = rng.randint(2, 3 * STEPS_PER_EPOCH)
    run.wait_for(f"^step {step}$")
    time.sleep(rng.uniform(0.0, 0.3))
    run.stop_group()  # torchrun, both ranks and their loader workers, like a spot shutdown
    signalled = time.monotonic()
    run.finish(timeout=STOP_BOUND_S + 60)  # torchrun exits non-zero after a SIGTERM
    took = time.monotonic() - signalled
    output = "\n".join(run.lines)
    note = (
        f"DDP trial {trial}: SIGTERM after step {step}, ended after {took:.1f}s\n{output[-3000:]}"
    )
    print(note.splitlines()[0])
    assert took < STOP_BOUND_S, note
    stops = {int(r): int(s) for r, s in re.findall(r"rank (\d) stopped at step (\d+)", output)}
    assert set(stops) == {0, 1} and len(set(stops.values())) == 1, note
    assert "killed by signal" not in output, note
    ckpt = assert_complete_checkpoint(tmp_path / "run", note)
    assert ckpt["position"]["global_step"] == stops[0] >= step, note
    assert len(ckpt["rng"]["per_rank"]) == 2, note
