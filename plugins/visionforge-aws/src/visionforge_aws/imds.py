"""EC2 instance metadata (IMDSv2): the spot interruption notice and the instance's own id.

Every read first PUTs ``/latest/api/token`` for a session token, then GETs with it. The
endpoint is ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` when set (as botocore reads it), else
``http://169.254.169.254``. ``/latest/meta-data/spot/instance-action`` answers 404 until EC2
decides to interrupt, then JSON like ``{"action": "stop", "time": "..."}`` about two minutes
before it does.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_TTL_S = 21600


def endpoint(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def _token(base: str, timeout: float) -> str:
    request = urllib.request.Request(
        f"{base}/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return str(answer.read().decode())


def get(path: str, *, base: str | None = None, timeout: float = 2.0) -> str | None:
    """GET ``/latest/<path>`` with a fresh IMDSv2 token; None on 404."""
    base = base or endpoint()
    token = _token(base, timeout)
    request = urllib.request.Request(
        f"{base}/latest/{path.lstrip('/')}", headers={"X-aws-ec2-metadata-token": token}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def interruption_notice(base: str | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
    """The spot instance-action JSON, or None while no interruption is scheduled."""
    text = get("meta-data/spot/instance-action", base=base, timeout=timeout)
    return None if text is None else dict(json.loads(text))


def instance_id(base: str | None = None, timeout: float = 2.0) -> str:
    text = get("meta-data/instance-id", base=base, timeout=timeout)
    if not text:
        raise RuntimeError("instance metadata has no instance-id (not on EC2?)")
    return text


class InterruptionWatcher:
    """Polls the notice every ``interval_s`` in a daemon thread; on a notice it records it and
    sends this process SIGTERM (the trainer's stop signal: checkpoint now, then return).
    Unreachable metadata (not on EC2, a hiccup) is retried at the next poll."""

    def __init__(self, interval_s: float = 5.0, base: str | None = None) -> None:
        self.interval_s = interval_s
        self.base = base or endpoint()
        self.notice: dict[str, Any] | None = None
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imds-watcher", daemon=True)

    def __enter__(self) -> InterruptionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                notice = interruption_notice(self.base)
            except (OSError, ValueError):
                self.errors += 1
                notice = None
            if notice is not None:
                self.notice = notice
                print(f"visionforge agent: spot interruption notice {notice}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self._stop.wait(self.interval_s)
