"""The EC2 agent against real clients on loopback: S3 on SeaweedFS, an IMDSv2 server in a
thread that announces a spot interruption when the test says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from visionforge import storage
from visionforge_aws import agent, imds

NOTICE = {"action": "stop", "time": "2026-11-30T16:00:00Z"}


class Imds:
    """IMDSv2 on 127.0.0.1: tokens by PUT, 401 without one, instance-action 404 until
    :meth:`announce`."""

    def __init__(self) -> None:
        self.notice: dict[str, Any] | None = None
        self.polls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes = b"") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    return self._send(400)
                self._send(200, b"token-1")

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                    return self._send(401)
                if self.path == "/latest/meta-data/spot/instance-action":
                    server.polls += 1
                    if server.notice is None:
                        return self._send(404)
                    return self._send(200, json.dumps(server.notice).encode())
                if self.path == "/latest/meta-data/instance-id":
                    return self._send(200, b"i-0123456789abcdef0")
                self._send(404)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"

    def announce(self) -> None:
        self.notice = NOTICE

    def __enter__(self) -> Imds:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def imds_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Imds]:
    with Imds() as server:
        monkeypatch.setenv(imds.ENDPOINT_ENV, server.endpoint)
        yield server


def tiny_recipe(epochs: int = 3) -> dict[str, Any]:
    return {
        "name": "tiny-ec2",
        "model": {"type": "timm", "name": "test_efficientnet", "num_classes": 2},
        "data": {
            "train": {
                "type": "synthetic_classification",
                "num_classes": 2,
                "num_samples": 32,
                "image_size": 16,
            }
        },
        "optimizer": {"type": "sgd", "lr": 0.05},
        "trainer": {
            "epochs": epochs,
            "batch_size": 4,
            "device": "cpu",
            "seed": 0,
            "loggers": ["csv"],
        },
        "runner": {"type": "local"},
    }


def put_recipe(run: str, data: dict[str, Any]) -> None:
    storage.write_bytes_atomic(f"{run}/{agent.RECIPE}", json.dumps(data).encode())


ENGINE_TESTS = Path(__file__).resolve().parents[3] / "tests"  # test_engine_support.py
HOLD = (
    "import sys, visionforge; from test_engine_support import HoldUntilStopped; "
    "visionforge.plugins.register_plugin('hold', HoldUntilStopped(int(sys.argv[1]))); "
    "from visionforge.cli import main; sys.exit(main(sys.argv[2:]))"
)


def start_agent(run: str, work: Path, hold_at: int | None = None) -> subprocess.Popen[str]:
    """``visionforge aws agent`` in a subprocess; with ``hold_at`` its training waits after
    that step until a stop signal arrives."""
    command = ["-m", "visionforge.cli"] if hold_at is None else ["-c", HOLD, str(hold_at)]
    python_path = os.pathsep.join(filter(None, [str(ENGINE_TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [
            *(sys.executable, *command, "aws", "agent", "--run", run),
            *("--work", str(work), "--poll", "0.2", "--upload-every", "0.5"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path},
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process ended before {what}:\n{out}")
        assert time.monotonic() < deadline, f"no {what} in 600 s"
        time.sleep(0.1)


def finish(process: subprocess.Popen[str]) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    return out


def final_weights(run: str) -> dict[str, torch.Tensor]:
    index = agent.latest_checkpoint(run)
    assert index is not None
    with storage.local_copy(f"{run}/{index['key']}") as path:
        return dict(torch.load(path, map_location="cpu", weights_only=False)["model"])


def test_notice_is_polled_with_a_token(imds_server: Imds) -> None:
    assert imds.interruption_notice() is None
    imds_server.announce()
    assert imds.interruption_notice() == NOTICE
    assert imds.instance_id() == "i-0123456789abcdef0"


def test_checkpoint_counts_only_once_its_index_is_uploaded(s3_bucket: str, tmp_path: Path) -> None:
    run = f"{s3_bucket}/runs/r1"
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"first")
    first = agent.publish_checkpoint(run, ckpt)
    ckpt.write_bytes(b"second")  # the next one: its file arrives but no index names it
    storage.put_file(ckpt, f"{run}/checkpoints/last-partial.ckpt")
    assert agent.latest_checkpoint(run) == first
    restored = tmp_path / "restored"
    agent.restore_checkpoint(run, restored)
    assert (restored / "last.ckpt").read_bytes() == b"first"
    second = agent.publish_checkpoint(run, ckpt)
    assert second["key"] != first["key"]
    assert not storage.exists(f"{run}/{first['key']}")  # the older object is gone
    agent.restore_checkpoint(run, restored)
    assert (restored / "last.ckpt").read_bytes() == b"second"


@pytest.mark.slow
def test_failure_writes_the_reason(s3_bucket: str, tmp_path: Path, imds_server: Imds) -> None:
    run = f"{s3_bucket}/runs/bad"
    data = tiny_recipe()
    data["model"]["name"] = "no_such_model_anywhere"
    put_recipe(run, data)
    assert agent.run_agent(run, tmp_path / "work", poll_s=0.2) == 1
    failed = json.loads(storage.read_text(f"{run}/{agent.FAILED}"))
    assert "no_such_model_anywhere" in failed["reason"]
    assert not storage.exists(f"{run}/{agent.DONE}")


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(
    s3_bucket: str, tmp_path: Path, imds_server: Imds
) -> None:
    whole, cut = f"{s3_bucket}/runs/whole", f"{s3_bucket}/runs/cut"
    put_recipe(whole, tiny_recipe())
    put_recipe(cut, tiny_recipe())
    finish(start_agent(whole, tmp_path / "whole"))
    assert storage.exists(f"{whole}/{agent.DONE}")

    # 8 steps an epoch: training waits after step 12 until the notice has become a SIGTERM
    first = start_agent(cut, tmp_path / "cut-1", hold_at=12)
    wait_for(lambda: agent.latest_checkpoint(cut) is not None, first, "first checkpoint")
    imds_server.announce()  # mid-run: after epoch 1 of 3
    out = finish(first)
    assert "spot interruption notice" in out
    assert not storage.exists(f"{cut}/{agent.DONE}")
    stopped = agent.latest_checkpoint(cut)
    assert stopped is not None

    imds_server.notice = None  # the instance came back
    second = start_agent(cut, tmp_path / "cut-2")  # a fresh disk, as on a new instance
    out = finish(second)
    assert f"resuming from {stopped['key']}" in out
    assert storage.exists(f"{cut}/{agent.DONE}")
    assert storage.exists(f"{cut}/output/manifest.json")
    a, b = final_weights(whole), final_weights(cut)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_kill_mid_upload_leaves_no_complete_looking_checkpoint(
    s3_bucket: str, tmp_path: Path, proxied: Any
) -> None:
    """SIGKILL of a process publishing a checkpoint while its PUT is held in the proxy: the
    index still names the previous checkpoint, whose object is whole."""
    run = f"{s3_bucket}/runs/killed"
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"first" * 1000)
    before = agent.publish_checkpoint(run, ckpt)
    ckpt.write_bytes(b"second" * 200_000)
    release = threading.Event()
    proxied.faults = lambda key, n: (release.wait(120) and None) if ".ckpt" in key else None
    code = (
        "from pathlib import Path; from visionforge_aws import agent; "
        f"agent.publish_checkpoint({run!r}, Path({str(ckpt)!r}))"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    wait_for(
        lambda: any(".ckpt" in k and before["key"] not in k for k in list(proxied.puts)),
        process,
        "the checkpoint upload",
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    release.set()
    index = agent.latest_checkpoint(run)
    assert index == before
    restored = tmp_path / "restored"
    agent.restore_checkpoint(run, restored)
    assert (restored / "last.ckpt").read_bytes() == b"first" * 1000
