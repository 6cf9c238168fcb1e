"""``visionforge aws agent --run s3://BUCKET/PREFIX/RUN``: the run on an EC2 instance.

Layout under the run prefix (written by the ``ec2`` runner and by this agent)::

    recipe.json                   the recipe as submitted
    inputs/<field>/...            local inputs uploaded with the run (optional)
    checkpoints/last-<sha>.ckpt   checkpoint files, never overwritten in place
    checkpoint.json               {"key", "sha256", "size", "time"}: the newest COMPLETE one
    output/...                    the run folder's other files (manifest, metrics, plots)
    logs/agent.log                the agent's log (the systemd unit's stdout/stderr)
    DONE | FAILED                 final markers (JSON; FAILED carries the reason)

A checkpoint counts only once ``checkpoint.json`` naming it is uploaded *after* the file, so a
kill -9 mid-upload leaves the previous checkpoint in force. On start the agent downloads the
recipe and its s3:// inputs, restores the newest complete checkpoint into its run folder and
trains with ``Trainer(recipe, resume=True)`` there. A background thread uploads each new
checkpoint as it appears and the other files every ``upload_every_s``; another polls the spot
interruption notice and turns it into SIGTERM, on which the trainer checkpoints at once and
the agent uploads it and exits 0 (EC2 stops the instance; systemd starts the agent again when
it comes back).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from visionforge import storage
from visionforge.config import recipe_from_dict
from visionforge.run_folder import LAST
from visionforge_aws import imds
from visionforge_aws.entry import _set_field
from visionforge_aws.sync import sha256_file, sync

CHECKPOINT_INDEX = "checkpoint.json"
DONE = "DONE"
FAILED = "FAILED"
RECIPE = "recipe.json"
LOG_KEY = "logs/agent.log"


def _url(run: str, *parts: str) -> str:
    return "/".join([run.rstrip("/"), *parts])


def latest_checkpoint(run: str) -> dict[str, Any] | None:
    """The index of the newest complete checkpoint of ``run`` (None before the first)."""
    url = _url(run, CHECKPOINT_INDEX)
    if not storage.exists(url):
        return None
    return dict(json.loads(storage.read_text(url)))


def publish_checkpoint(run: str, checkpoint: Path) -> dict[str, Any]:
    """Upload ``checkpoint`` under a content-named key, then the index that makes it count;
    older checkpoint objects are removed after the index moved on."""
    snapshot = checkpoint.with_name(f".upload-{os.getpid()}-{checkpoint.name}")
    snapshot.unlink(missing_ok=True)
    os.link(checkpoint, snapshot)  # the trainer replaces last.ckpt by rename: freeze this one
    try:
        digest = sha256_file(snapshot)
        key = f"checkpoints/last-{digest[:16]}.ckpt"
        storage.put_file(snapshot, _url(run, key))
        index = {
            "key": key,
            "sha256": digest,
            "size": snapshot.stat().st_size,
            "time": time.time(),
        }
    finally:
        snapshot.unlink(missing_ok=True)
    previous = latest_checkpoint(run)
    storage.write_bytes_atomic(_url(run, CHECKPOINT_INDEX), json.dumps(index).encode())
    if previous and previous["key"] != key:
        fs, path = storage.filesystem(_url(run, previous["key"]))
        fs.rm(path)
    return index


def restore_checkpoint(run: str, folder: Path) -> dict[str, Any] | None:
    """Download the newest complete checkpoint into ``folder/last.ckpt`` (checked against its
    SHA-256); None when the run has none yet."""
    index = latest_checkpoint(run)
    if index is None:
        return None
    target = folder / LAST
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".download")
    fs, path = storage.filesystem(_url(run, index["key"]))
    fs.get_file(path, str(partial))
    if sha256_file(partial) != index["sha256"]:
        partial.unlink()
        raise RuntimeError(f"{_url(run, index['key'])}: SHA-256 differs from {CHECKPOINT_INDEX}")
    partial.replace(target)
    return index


class Uploader:
    """Background uploads of a run folder: each new ``last.ckpt`` as it appears (checked every
    ``check_s``), the other files every ``every_s``; :meth:`flush` does both now."""

    def __init__(
        self, run: str, folder: Path, log: Path | None, every_s: float, check_s: float = 1.0
    ) -> None:
        self.run = run
        self.folder = folder
        self.log = log
        self.every_s = every_s
        self.check_s = check_s
        self.published: tuple[int, int] | None = None
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="s3-uploader", daemon=True)

    def __enter__(self) -> Uploader:
        checkpoint = self.folder / LAST
        if checkpoint.exists():  # restored from S3: already there
            stat = checkpoint.stat()
            self.published = (stat.st_ino, stat.st_mtime_ns)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def checkpoint(self) -> None:
        checkpoint = self.folder / LAST
        with self._lock:
            if not checkpoint.exists():
                return
            stat = checkpoint.stat()
            if (stat.st_ino, stat.st_mtime_ns) == self.published:
                return
            index = publish_checkpoint(self.run, checkpoint)
            self.published = (stat.st_ino, stat.st_mtime_ns)
            print(f"visionforge agent: checkpoint {index['key']} uploaded", flush=True)

    def files(self) -> None:
        with self._lock:
            for path in sorted(self.folder.rglob("*")):
                if path.is_file() and path.suffix not in (".ckpt", ".download"):
                    name = path.relative_to(self.folder).as_posix()
                    if not name.startswith(".upload-"):
                        storage.put_file(path, _url(self.run, "output", name))
            if self.log is not None and self.log.exists():
                storage.put_file(self.log, _url(self.run, LOG_KEY))

    def flush(self) -> None:
        self.checkpoint()
        self.files()

    def _loop(self) -> None:
        last_files = time.monotonic()
        while not self._stop.wait(self.check_s):
            try:
                self.checkpoint()
                if time.monotonic() - last_files >= self.every_s:
                    self.files()
                    last_files = time.monotonic()
            except Exception as err:  # retried at the next tick; reported at the end
                self.errors.append(f"{type(err).__name__}: {err}")


def pull_inputs(data: dict[str, Any], run: str, work: Path) -> None:
    """Copy the recipe's s3:// inputs into ``work/inputs`` and point the fields there."""
    recipe = recipe_from_dict(data)
    for field, url in recipe.input_paths():
        if not url.startswith("s3://"):
            continue
        target = work / "inputs" / field
        fs, path = storage.filesystem(url)
        if fs.isfile(path):
            target.mkdir(parents=True, exist_ok=True)
            local = target / Path(path).name
            if not local.exists():
                fs.get_file(path, str(local))
            _set_field(data, field, str(local))
            continue
        report = sync(url, target, progress=sys.stderr.isatty())
        if not report.ok:
            raise RuntimeError(f"{field}: downloading {url} failed: {report.failed}")
        _set_field(data, field, str(target))


def _marker(run: str, name: str, **content: Any) -> None:
    storage.write_bytes_atomic(
        _url(run, name), json.dumps({"time": time.time(), **content}, indent=2).encode()
    )


def _terminate_self(base: str | None) -> None:
    import boto3

    instance = imds.instance_id(base)
    region = imds.get("meta-data/placement/region", base=base)
    ec2 = boto3.client("ec2", region_name=region)
    found = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    request = found.get("SpotInstanceRequestId")
    if request:  # a persistent request would launch a replacement
        ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request])
    ec2.terminate_instances(InstanceIds=[instance])


def run_agent(
    run: str,
    work: Path,
    *,
    log: Path | None = None,
    upload_every_s: float = 60.0,
    poll_s: float = 5.0,
    terminate: bool | None = None,
) -> int:
    """Train the run at ``run`` (an s3:// prefix) in ``work``; returns the exit code."""
    from visionforge.engine import Trainer
    from visionforge.engine.signals import StopSignal

    run = run.rstrip("/")
    with StopSignal(restore=False) as stop_signal:
        if storage.exists(_url(run, DONE)):
            print(f"visionforge agent: {run} is already done", flush=True)
            return 0
        data: dict[str, Any] = json.loads(storage.read_text(_url(run, RECIPE)))
        runner = data.get("runner") or {}
        if terminate is None:
            terminate = bool(runner.get("terminate_when_done", False))
        folder = work / "run"
        uploader = Uploader(run, folder, log, upload_every_s)
        try:
            pull_inputs(data, run, work)
            data["runner"] = {"type": "local"}
            data["trainer"]["output"] = str(folder)
            restored = restore_checkpoint(run, folder)
            if restored is not None:
                print(f"visionforge agent: resuming from {restored['key']}", flush=True)
            recipe = recipe_from_dict(data)
            with uploader, imds.InterruptionWatcher(poll_s) as watcher:
                if stop_signal.requested:
                    return 0
                result = Trainer(recipe, resume=True, exist_ok=True).fit()
            uploader.flush()  # the checkpoint written on a stop, the final files
        except BaseException as err:
            reason = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            try:
                uploader.files()
                _marker(run, FAILED, reason=reason)
            finally:
                print(f"visionforge agent: FAILED: {reason}", flush=True)
            return 1
        if result.stopped_by_signal:
            why = "spot interruption notice" if watcher.notice else "stop signal"
            print(f"visionforge agent: stopped ({why}); checkpoint uploaded", flush=True)
            return 0
        _marker(run, DONE, metrics=result.metrics, upload_errors=uploader.errors)
        print(f"visionforge agent: DONE {result.metrics}", flush=True)
        if log is not None and log.exists():
            storage.put_file(log, _url(run, LOG_KEY))
        if terminate:
            _terminate_self(None)
        return 0
