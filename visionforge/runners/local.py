"""The ``local`` runner: train on this machine, in-process or with torchrun.

``nproc: 1`` runs the Trainer in the calling process, synchronously (the main thread keeps
SIGTERM/SIGINT, so a stop request checkpoints and ends the run cleanly). ``nproc > 1`` starts
``python -m torch.distributed.run --standalone --nproc-per-node N -m visionforge.engine.worker``
as a subprocess; its output goes to ``torchrun.log`` in the run's output folder (and to the
console when ``echo`` is on) and its exit code decides the status.

Every run is recorded in the run registry (:mod:`visionforge.runners.records`), so
``visionforge runs status|logs|stop|artifacts ID`` reach it from any process. A *detached*
runner (``visionforge train --detach``) starts a small supervisor process
(:mod:`visionforge.runners.supervisor`) that runs torchrun, forwards a stop request and writes
the final status into the record; :meth:`LocalRunner.attach` reads that record.
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
from visionforge.run_folder import clear_run_folder
from visionforge.runners import RunFailedError, records
from visionforge.runners.records import RunRecord

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


def _new_record(recipe: Recipe, cfg: LocalRunnerConfig, **state: object) -> RunRecord:
    record = RunRecord(
        id=records.new_run_id(recipe.name or "run"),
        runner={"type": "local", **cfg.model_dump(mode="json")},
        recipe=recipe.name or "",
        output=str(recipe.trainer.output),
        state={"status": "pending", **state},
    )
    record.save()
    return record


def _finish_record(
    record: RunRecord, status: Status, result: TrainResult | None, error: BaseException | None
) -> None:
    """Write a run's final status, output, metrics and error into its record."""
    if result is not None:
        record.output = result.output
    record.update(
        status=status,
        metrics=dict(result.metrics) if result else None,
        error=str(error) if error else None,
        ended=time.time(),
    )


class InProcessRun:
    """A run of the Trainer in this process; finished by the time :meth:`LocalRunner.submit`
    returns, so its status is final (and :meth:`stop` has nothing left to stop)."""

    def __init__(
        self, recipe: Recipe, resume: bool | str, options: TrainOptions, record: RunRecord
    ) -> None:
        self.recipe = recipe
        self.resume = resume
        self.options = options
        self.record = record
        self.train_result: TrainResult | None = None
        self._error: BaseException | None = None
        self._status: Status = "pending"
        self._logs = io.StringIO()

    @property
    def id(self) -> str:
        return self.record.id

    def run(self) -> None:
        """Train (blocking); an exception is kept (:meth:`error`) and makes the run failed."""
        from visionforge.engine import Trainer

        self._status = "running"
        self.record.update(status="running", pid=os.getpid())
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
                self.train_result = trainer.fit()
        except Exception as err:
            self._error = err
            self._status = "failed"
        else:
            self._status = "stopped" if self.train_result.stopped_by_signal else "completed"
        log_path = records.runs_folder() / f"{self.id}.log"
        storage.write_bytes_atomic(log_path, self._logs.getvalue().encode())
        self.record.state["log"] = str(log_path)
        _finish_record(self.record, self._status, self.train_result, self._error)

    def status(self) -> Status:
        return self._status

    def logs(self) -> str:
        """What the run printed (stdout and stderr, progress bars included)."""
        return self._logs.getvalue()

    def wait(self, timeout: float | None = None) -> Status:
        return self._status

    def stop(self) -> None:
        """Nothing to do: the run ended before :meth:`LocalRunner.submit` returned (a stop
        while it runs is SIGTERM/Ctrl-C, which the trainer turns into a checkpoint)."""

    def result(self) -> dict[str, float] | None:
        return dict(self.train_result.metrics) if self.train_result else None

    def error(self) -> BaseException | None:
        return self._error

    def artifacts(self) -> list[str]:
        return list_artifacts(self.output)

    @property
    def output(self) -> str:
        return self.train_result.output if self.train_result else str(self.recipe.trainer.output)


class TorchrunRun:
    """A ``torchrun`` subprocess training with ``nproc`` processes."""

    def __init__(
        self,
        recipe: Recipe,
        resume: bool | str,
        cfg: LocalRunnerConfig,
        echo: bool,
        options: TrainOptions,
        record: RunRecord,
    ) -> None:
        self.recipe = recipe
        self.record = record
        self.output = str(recipe.trainer.output)
        self._error: BaseException | None = None
        self.train_result: TrainResult | None = None
        self._stopped = False
        if options.exist_ok and not resume:
            # before this run's own log and recipe land there (the trainer would find no run
            # left to clear, and must not delete them)
            clear_run_folder(self.output)
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
        self._finished = False
        record.update(status="running", log=str(self.log_path), torchrun_pid=self._process.pid)

    @property
    def id(self) -> str:
        return self.record.id

    def result(self) -> dict[str, float] | None:
        return dict(self.train_result.metrics) if self.train_result else None

    def error(self) -> BaseException | None:
        return self._error

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
        if self.train_result is not None and self.train_result.stopped_by_signal:
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
        return self.status()

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
        if self._finished:
            return
        self._finished = True
        self._pump.join()
        self.train_result = _worker_summary(self.logs())
        if storage.is_remote(self.output):
            storage.put_file(self.log_path, storage.join(self.output, LOG_NAME))
        status = self.status()
        if status == "failed" and self._error is None:
            cause = _last_error_line(self.logs())
            self._error = RunFailedError(
                f"torchrun exited with code {self._process.returncode}"
                + (f" ({cause})" if cause else "")
                + f"; full log: {storage.join(self.output, LOG_NAME)}"
            )
        _finish_record(self.record, status, self.train_result, self._error)

    def logs(self) -> str:
        """Everything torchrun and the workers printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def artifacts(self) -> list[str]:
        return list_artifacts(self.output)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RecordedRun:
    """A local run reached through its record (``visionforge runs``, :meth:`LocalRunner.attach`):
    a detached run's supervisor, or a run of another process, alive or ended."""

    POLL_S = 0.5

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    def _refresh(self) -> dict[str, object]:
        self.record = self.record.reload()
        return self.record.state

    def status(self) -> Status:
        state = self._refresh()
        status = str(state.get("status", "pending"))
        if status in ("pending", "running"):
            pid = state.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                return "failed"  # its process ended without writing a final status
            return "running" if status == "running" else "pending"
        if status == "completed":
            return "completed"
        return "stopped" if status == "stopped" else "failed"

    def logs(self) -> str:
        log = self._refresh().get("log")
        path = Path(str(log)) if log else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def wait(self, timeout: float | None = None) -> Status:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status()) in ("pending", "running"):
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(self.POLL_S)
        return status

    def stop(self) -> None:
        """SIGTERM to the process running it: the trainer checkpoints and stops."""
        pid = self._refresh().get("pid")
        if self.status() in ("pending", "running") and isinstance(pid, int):
            os.kill(pid, signal.SIGTERM)

    def result(self) -> dict[str, float] | None:
        metrics = self._refresh().get("metrics")
        return {str(k): float(v) for k, v in metrics.items()} if isinstance(metrics, dict) else None

    def error(self) -> BaseException | None:
        if self.status() != "failed":
            return None
        message = self.record.state.get("error")
        if message:
            return RunFailedError(str(message))
        return RunFailedError(
            f"run {self.id}: its process (pid {self.record.state.get('pid')}) ended without "
            f"recording a result; see: visionforge runs logs {self.id}"
        )

    def artifacts(self) -> list[str]:
        self._refresh()
        return list_artifacts(self.record.output)


class LocalRunner:
    """Runs recipes on this machine; ``echo`` copies torchrun's output to the console;
    ``detach`` hands the run to a supervisor process and returns at once."""

    def __init__(self, cfg: LocalRunnerConfig, *, echo: bool = True, detach: bool = False) -> None:
        self.cfg = cfg
        self.echo = echo
        self.detach = detach

    def submit(
        self,
        recipe: Recipe,
        *,
        resume: bool | str = False,
        exist_ok: bool = False,
        allow_recipe_change: bool = False,
    ) -> InProcessRun | TorchrunRun | RecordedRun:
        """Start a run into ``trainer.output``: with ``nproc: 1`` (not detached) it trains here
        and returns once it has finished; otherwise torchrun runs it in the background.
        ``resume``, ``exist_ok`` and ``allow_recipe_change`` are the
        :class:`~visionforge.engine.Trainer`'s."""
        options = TrainOptions(exist_ok=exist_ok, allow_recipe_change=allow_recipe_change)
        if self.detach:
            return self._submit_detached(recipe, resume, options)
        record = _new_record(recipe, self.cfg, pid=os.getpid())
        if self.cfg.nproc == 1:
            run = InProcessRun(recipe, resume, options, record)
            run.run()
            return run
        return TorchrunRun(recipe, resume, self.cfg, self.echo, options, record)

    def _submit_detached(
        self, recipe: Recipe, resume: bool | str, options: TrainOptions
    ) -> RecordedRun:
        """Start the supervisor (its own session: it outlives this process) and return."""
        record = _new_record(recipe, self.cfg)
        request = records.runs_folder() / f"{record.id}.recipe.json"
        storage.write_bytes_atomic(request, recipe.model_dump_json(indent=2).encode())
        record.update(recipe_file=str(request))  # the supervisor adds its pid, then its status
        command = [sys.executable, "-m", "visionforge.runners.supervisor", record.id]
        if resume:
            command += ["--resume", *([resume] if isinstance(resume, str) else [])]
        if options.exist_ok:
            command.append("--exist-ok")
        if options.allow_recipe_change:
            command.append("--allow-recipe-change")
        with open(records.runs_folder() / f"{record.id}.supervisor.log", "wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        del process  # it runs on in its own session; the record says how it ends
        return RecordedRun(record)

    def attach(self, run_id: str) -> RecordedRun:
        """A handle on a run recorded by this or another process."""
        return RecordedRun(records.load(run_id))
