"""The ``local`` runner: train on this machine, in-process or with torchrun.

``nproc: 1`` runs the Trainer in the calling process, synchronously (the main thread keeps
SIGTERM/SIGINT, so a stop request checkpoints and ends the run cleanly). ``nproc > 1`` starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m visionforge.engine.worker``
as a subprocess; its output goes to ``torchrun.log`` in the run's output folder (and to the
console when ``echo`` is on) and its exit code decides the status.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TextIO

from visionforge import storage
from visionforge.components.configs import LocalRunnerConfig
from visionforge.config import Recipe
from visionforge.runners import RunFailedError

if TYPE_CHECKING:
    from visionforge.engine import TrainResult
    from visionforge.engine.signals import StopSignal

Status = Literal["pending", "running", "completed", "failed", "stopped"]

LOG_NAME = "torchrun.log"
RECIPE_NAME = "torchrun-recipe.json"
_ERROR_LINE = re.compile(r"^error: |^(\[[^\]]*\]:\s*)?[\w.]*(Error|Exception): ")
LAUNCHER = ("-m", "torch.distributed.run", "--standalone")
"""Python arguments that start torchrun (the worker command follows)."""


def build_local(cfg: LocalRunnerConfig) -> LocalRunner:
    """Registry builder of the ``local`` runner."""
    return LocalRunner(cfg)


def list_artifacts(output: str) -> list[str]:
    """Every file under a run's output folder (local paths or full URLs), sorted."""
    fs, root = storage.filesystem(output)
    if not fs.exists(root):
        return []
    files = sorted(fs.find(root))
    if storage.is_remote(output):
        return [fs.unstrip_protocol(f) for f in files]
    return files


def _last_error_line(log: str) -> str:
    """The last line of ``log`` that reports an error ("" when none does)."""
    errors = [line.strip() for line in log.splitlines() if _ERROR_LINE.search(line.strip())]
    return errors[-1] if errors else ""


def _worker_summary(log: str) -> TrainResult | None:
    """The TrainResult that rank 0 of ``visionforge.engine.worker`` printed as a JSON line."""
    from visionforge.engine import TrainResult

    for line in reversed(log.splitlines()):
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError, TypeError):
            return TrainResult(**json.loads(line))
    return None


@dataclass(frozen=True)
class TrainOptions:
    """How a run treats its folder: overwrite a used one, resume with another recipe hash."""

    exist_ok: bool = False
    allow_recipe_change: bool = False


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and keeps a copy."""

    def __init__(self, stream: TextIO, copy: io.StringIO) -> None:
        self.stream = stream
        self.copy = copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    def fileno(self) -> int:
        return self.stream.fileno()


class InProcessRun:
    """A run of the Trainer in this process; finished by the time :meth:`LocalRunner.submit`
    returns, so its status is final."""

    def __init__(self, recipe: Recipe, resume: bool | str, options: TrainOptions) -> None:
        self.recipe = recipe
        self.resume = resume
        self.options = options
        self.result: TrainResult | None = None
        self.error: BaseException | None = None
        self._status: Status = "pending"
        self._logs = io.StringIO()

    def run(self) -> None:
        """Train (blocking); exceptions are kept in :attr:`error` and make the run failed."""
        from visionforge.engine import Trainer

        self._status = "running"
        try:
            with (
                contextlib.redirect_stdout(_Tee(sys.stdout, self._logs)),
                contextlib.redirect_stderr(_Tee(sys.stderr, self._logs)),
            ):
                trainer = Trainer(
                    self.recipe,
                    resume=self.resume,
                    exist_ok=self.options.exist_ok,
                    allow_recipe_change=self.options.allow_recipe_change,
                )
                self.result = trainer.fit()
        except Exception as err:
            self.error = err
            self._status = "failed"
            return
        self._status = "stopped" if self.result.stopped_by_signal else "completed"

    def status(self) -> Status:
        return self._status

    def logs(self) -> str:
        """What the run printed (stdout and stderr, progress bars included)."""
        return self._logs.getvalue()

    def wait(self, timeout: float | None = None) -> Status:
        return self._status

    def artifacts(self) -> list[str]:
        return list_artifacts(self.output)

    @property
    def output(self) -> str:
        return self.result.output if self.result else str(self.recipe.trainer.output)


class TorchrunRun:
    """A ``torchrun`` subprocess training with ``nproc`` processes."""

    def __init__(
        self,
        recipe: Recipe,
        resume: bool | str,
        cfg: LocalRunnerConfig,
        echo: bool,
        options: TrainOptions,
    ) -> None:
        self.recipe = recipe
        self.output = str(recipe.trainer.output)
        self.error: BaseException | None = None
        self.result: TrainResult | None = None
        self._stopped = False
        remote = storage.is_remote(self.output)
        self._local_dir = Path(
            tempfile.mkdtemp(prefix="visionforge-torchrun-")
            if remote
            else self.output.removeprefix("file://")
        )
        self._local_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._local_dir / LOG_NAME
        recipe_path = self._local_dir / RECIPE_NAME
        storage.write_bytes_atomic(recipe_path, recipe.model_dump_json(indent=2).encode())
        command = [
            sys.executable,
            *LAUNCHER,
            "--nproc-per-node",
            str(cfg.nproc),
            "-m",
            "visionforge.engine.worker",
            str(recipe_path),
        ]
        if resume:
            command.append("--resume")
            if isinstance(resume, str):
                command.append(resume)
        if options.exist_ok:
            command.append("--exist-ok")
        if options.allow_recipe_change:
            command.append("--allow-recipe-change")
        env = dict(os.environ)
        if cfg.backend != "auto":
            from visionforge.engine.distributed import BACKEND_ENV

            env[BACKEND_ENV] = cfg.backend
        self.command = command
        self._log_file: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 (closed by the pump)
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(echo,), daemon=True)
        self._pump.start()

    def _copy_output(self, echo: bool) -> None:
        stream = self._process.stdout
        assert stream is not None  # Popen(stdout=PIPE)
        with self._log_file:
            while chunk := os.read(stream.fileno(), 1 << 16):
                self._log_file.write(chunk)
                self._log_file.flush()
                if echo:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()

    def status(self) -> Status:
        """``stopped`` only when rank 0 reported a clean stop (checkpoint written); torchrun
        itself exits non-zero after forwarding a SIGTERM, so its exit code alone cannot say."""
        code = self._process.poll()
        if code is None:
            return "running"
        if self.result is not None and self.result.stopped_by_signal:
            return "stopped"
        if code != 0:
            return "failed"
        return "completed"

    def stop(self) -> None:
        """Ask every process to checkpoint and stop (SIGTERM to torchrun's process group)."""
        if self._process.poll() is None and not self._stopped:
            self._stopped = True
            os.killpg(self._process.pid, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> Status:
        """Block until the run ends (or ``timeout`` seconds). SIGTERM/SIGINT received meanwhile
        (in the main thread) are passed on as :meth:`stop`: the run checkpoints and ends."""
        from visionforge.engine.signals import StopSignal

        with StopSignal() as stop:
            try:
                self._wait_forwarding(stop, timeout)
            except subprocess.TimeoutExpired:
                return "running"
        self._finish()
        status = self.status()
        if status == "failed" and self.error is None:
            cause = _last_error_line(self.logs())
            self.error = RunFailedError(
                f"torchrun exited with code {self._process.returncode}"
                + (f" ({cause})" if cause else "")
                + f"; full log: {storage.join(self.output, LOG_NAME)}"
            )
        return status

    def _wait_forwarding(self, stop: StopSignal, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if stop.requested:
                self.stop()
            step = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            try:
                self._process.wait(max(step, 0.0))
                return
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def _finish(self) -> None:
        self._pump.join()
        self.result = _worker_summary(self.logs())
        if storage.is_remote(self.output):
            storage.put_file(self.log_path, storage.join(self.output, LOG_NAME))

    def logs(self) -> str:
        """Everything torchrun and the workers printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def artifacts(self) -> list[str]:
        return list_artifacts(self.output)


class LocalRunner:
    """Runs recipes on this machine; ``echo`` copies torchrun's output to the console."""

    def __init__(self, cfg: LocalRunnerConfig, *, echo: bool = True) -> None:
        self.cfg = cfg
        self.echo = echo

    def submit(
        self,
        recipe: Recipe,
        *,
        resume: bool | str = False,
        exist_ok: bool = False,
        allow_recipe_change: bool = False,
    ) -> InProcessRun | TorchrunRun:
        """Start a run into ``trainer.output``: with ``nproc: 1`` it trains here and returns
        once it has finished. ``resume``, ``exist_ok`` and ``allow_recipe_change`` are the
        :class:`~visionforge.engine.Trainer`'s."""
        options = TrainOptions(exist_ok=exist_ok, allow_recipe_change=allow_recipe_change)
        if self.cfg.nproc == 1:
            run = InProcessRun(recipe, resume, options)
            run.run()
            return run
        return TorchrunRun(recipe, resume, self.cfg, self.echo, options)
