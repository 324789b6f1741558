"""Review of the newest fast paths: the sidecar's forwarder against clients that go away.

The sidecar runs under real uvicorn on loopback; the upstream is a raw TCP
server that streams its answer for as long as someone reads it. uvicorn's
``send`` returns quietly once the client is gone, so a forwarder that only
sends never learns it: it would keep the upstream's connection (one of
``upstream_max_connections``) and read the stream into the void for as long
as the upstream streams, and the trail would say the answer was whole.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, poll, sidecar_settings
from tokenkit import AUDIENCE, ISSUER
from upstreamkit import ThreadedUpstream, read_head

from bench._pg import free_port

POLICIES = Path(__file__).resolve().parents[2] / "policies"


class StreamingUpstream(ThreadedUpstream):
    """Answers each request with a chunked body that never ends; notes when a reader leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.ended = 0
        self._lock = threading.Lock()
        self.start()

    def handle(self, conn: socket.socket) -> None:
        if read_head(conn) is None:
            return
        with self._lock:
            self.open += 1
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 1024
            while True:
                conn.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                threading.Event().wait(0.005)
        except OSError:
            pass
        finally:
            with self._lock:
                self.ended += 1


@pytest.fixture
def streaming(tmp_path: Path, keys: Any) -> Iterator[tuple[ServerThread, StreamingUpstream]]:
    from middleware.sidecar import create_app

    upstream = StreamingUpstream()
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings_ = sidecar_settings(tmp_path, policy, keys.identity(),
                                 upstream=f"http://127.0.0.1:{upstream.port}",
                                 upstream_max_connections=2)
    try:
        with ServerThread(create_app(settings_), free_port()) as server:
            yield server, upstream
    finally:
        upstream.close()


def _read_and_leave(port: int, token: str) -> bytes:
    """Ask for a customer's record, read the answer's start and some body, hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /customers/c-0001 HTTP/1.1\r\nHost: sidecar\r\n"
                     b"Authorization: Bearer " + token.encode() + b"\r\n"
                     b"X-Purpose: relationship.management\r\n\r\n")
        answer = b""
        while len(answer) < 8192 and (data := conn.recv(65536)):
            answer += data
    return answer


def test_a_client_that_leaves_frees_the_upstream_and_is_recorded_as_aborted(
    streaming: tuple[ServerThread, StreamingUpstream], keys: Any, tmp_path: Path
) -> None:
    """Clients that hang up mid-stream must not keep the upstream's connections busy."""
    server, upstream = streaming
    token = keys.mint("hs", sub="svc:crm")
    for _ in range(2):  # as many as the pool holds
        answer = _read_and_leave(server.port, token)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    # The forwarder lets go of each stream once its client is gone.
    poll(lambda: upstream.ended == upstream.open == 2, timeout=20)
    decisions = audit_rows(tmp_path / "audit.db", "kind = 'decision'")
    assert [(d["allowed"], d["http_status"]) for d in decisions] == [(1, 200), (1, 200)]
    for decision in decisions:
        outcomes = poll(lambda d=decision: audit_rows(
            tmp_path / "audit.db", "decision_ref = ?", (d["event_id"],)))
        assert [(o["http_status"], o["detail"]) for o in outcomes] == [(200, "aborted")]


def test_a_client_that_pipelines_behind_a_stream_and_leaves_frees_the_upstream(
    tmp_path: Path, keys: Any
) -> None:
    """``guard sidecar`` itself: the stream's request hears that its client left."""
    upstream = StreamingUpstream()
    policy = policy_copy(tmp_path / "policy", POLICIES)
    port = free_port()
    env = {**os.environ, "GUARD_CONFIG": os.devnull,
           "GUARD_POLICY__DIR": str(policy), "GUARD_POLICY__WATCH": "false",
           "GUARD_SIDECAR__ROUTES": str(policy / "routes.csv"),
           "GUARD_SIDECAR__UPSTREAM": f"http://127.0.0.1:{upstream.port}",
           "GUARD_AUDIT__STORE": f"sqlite:///{tmp_path / 'audit.db'}",
           "GUARD_AUDIT__HMAC_KEY": str(tmp_path / "hmac.key"),
           "GUARD_AUDIT__SIGNING_KEY": str(tmp_path / "signing.key"),
           "GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file),
           "GUARD_IDENTITY__AUDIENCE": AUDIENCE, "GUARD_IDENTITY__ISSUER": ISSUER}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("guard")), "sidecar", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the sidecar did not start: {proc.communicate()}")
                time.sleep(0.1)
        token = keys.mint("hs", sub="svc:crm")
        request = (b"GET /customers/c-0001 HTTP/1.1\r\nHost: sidecar\r\n"
                   b"Authorization: Bearer " + token.encode() + b"\r\n"
                   b"X-Purpose: relationship.management\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(request + request)  # the second waits behind the stream
            answer = b""
            while len(answer) < 8192 and (data := conn.recv(65536)):
                answer += data
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        poll(lambda: upstream.ended == upstream.open == 1, timeout=20)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # still streaming (the bug): stop it for good
            proc.kill()
            proc.communicate()
        upstream.close()
