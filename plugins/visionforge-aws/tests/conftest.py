"""Fixtures of the aws plugin tests. ``FaultyProxy``: an HTTP proxy on loopback that injects
faults into PUT requests on their way to S3.

Each request runs on a fresh upstream connection (``Connection: close``). ``faults(key, n)``
decides what happens to the n-th PUT (0-based) of an object key: ``None`` forwards it,
``"503"`` answers ``503 SlowDown`` without forwarding, ``"drop"`` closes the connection
without forwarding, ``"drop-after"`` forwards it (the object arrives) and then closes the
connection before the answer reaches the client.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import socketserver
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import fsspec
import pytest

Fault = str | None
_SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>\n"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_SLOW_DOWN_BODY)}\r\n\r\n".encode()
    + _SLOW_DOWN_BODY
)


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class FaultyProxy:
    """Start with ``with FaultyProxy(upstream, faults) as proxy: proxy.endpoint``."""

    def __init__(
        self, upstream: str, faults: Callable[[str, int], Fault], put_delay: float = 0.0
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults = faults
        self.put_delay = put_delay
        self.puts: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        """Requests by HTTP method (HEAD, GET, PUT, ...)."""
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultyProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, conn: socket.socket) -> None:
        head, body = _read_head(conn)
        if not head:
            return
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].decode().split(" ", 2)
        headers = [
            line
            for line in lines[1:]
            if not line.lower().startswith((b"connection:", b"expect:", b"keep-alive:"))
        ]
        length = 0
        for line in headers:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if any(line.lower().startswith(b"expect:") for line in lines[1:]):
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        fault: Fault = None
        with self._lock:
            self.requests[method] += 1
        if method == "PUT":
            key = unquote(urlsplit(target).path)
            with self._lock:
                attempt = self.puts[key]
                self.puts[key] += 1
                fault = self.faults(key, attempt)
                if fault:
                    self.injected[fault] += 1
            if self.put_delay:
                time.sleep(self.put_delay)
        if fault == "503":
            conn.sendall(SLOW_DOWN)
            return
        if fault == "drop":
            conn.shutdown(socket.SHUT_RDWR)
            return
        request = b"\r\n".join([lines[0], *headers, b"Connection: close", b"", b""]) + body
        with socket.create_connection(self.upstream) as up:
            up.sendall(request)
            if fault == "drop-after":
                while up.recv(65536):  # the upstream answers: the object is stored
                    pass
                conn.shutdown(socket.SHUT_RDWR)
                return
            while chunk := up.recv(65536):
                conn.sendall(chunk)


@pytest.fixture
def proxied(
    s3_bucket: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultyProxy]:
    """S3 requests of the code under test go through a FaultyProxy (``proxy.faults`` is set
    by the test; no faults by default)."""
    with FaultyProxy(s3_server.endpoint, lambda key, n: None) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", proxy.endpoint)
        # restored here, before s3_bucket removes it (monkeypatch would put it back after)
        conf = fsspec.config.conf["s3"]
        before = conf["endpoint_url"]
        conf["endpoint_url"] = proxy.endpoint
        try:
            yield proxy
        finally:
            conf["endpoint_url"] = before


@dataclass(frozen=True)
class MotoServer:
    """moto in server mode on loopback: a SageMaker/CloudWatch Logs control plane."""

    endpoint: str

    def post(self, path: str) -> bytes:
        request = urllib.request.Request(self.endpoint + path, method="POST")
        with urllib.request.urlopen(request) as answer:
            return bytes(answer.read())

    def recorded(self, target: str) -> list[dict[str, Any]]:
        """JSON bodies of the recorded requests whose X-Amz-Target is ``SageMaker.<target>``."""
        with urllib.request.urlopen(self.endpoint + "/moto-api/recorder/download-recording") as f:
            lines = f.read().decode().splitlines()
        bodies = []
        for line in lines:
            entry = json.loads(line)
            if entry["headers"].get("X-Amz-Target") == f"SageMaker.{target}":
                body = entry["body"]
                raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
                bodies.append(json.loads(raw))
        return bodies


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    # the recorder's file (default: ./moto_recording in the working folder) goes to a temp dir
    recording = tmp_path_factory.mktemp("moto") / "recording"
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoServer(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def sagemaker_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """boto3's SageMaker and Logs clients go to moto (S3 stays where ``s3_bucket`` put it);
    moto records every request from here on."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", moto_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    moto_server.post("/moto-api/reset")
    moto_server.post("/moto-api/recorder/reset-recording")
    moto_server.post("/moto-api/recorder/start-recording")
    return moto_server
