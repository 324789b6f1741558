"""Durable before data flows, in the sidecar: with the audit journal's commit held open.

The journal writer's appends go through a gate the test opens, shuts or makes
fail; the sidecar and its upstream are real uvicorn servers on loopback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, lifespan, policy_copy, sidecar_settings
from starlette.types import Receive, Scope, Send

from bench._pg import free_port
from guard._errors import AuditUnavailableError
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[3] / "policies"
SECRET = b'{"name":"Ann Example"}'
QUIET = 0.5
"""Seconds a test waits to see that nothing arrives (it can only pass wrongly, never fail)."""


class Gate:
    """Stands in the journal writer's path: each append waits while the gate is shut.

    Args:
        journal: What the writer appended to (its appends go through unchanged).
    """

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self.opened = threading.Event()
        self.opened.set()
        self.holding = threading.Event()
        """Set once an append waits at the shut gate."""
        self.fail = False

    def append(self, payloads: Sequence[bytes]) -> int:
        if not self.opened.is_set():
            self.holding.set()
            assert self.opened.wait(30), "the test never opened the gate"
        if self.fail:
            raise AuditUnavailableError("the journal refused the batch (test)")
        offset: int = self._journal.append(payloads)
        return offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


class Upstream:
    """An ASGI upstream that notes what reached it and when its answer was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.reached = threading.Event()
        self.answered = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((scope["method"], headers))
        self.reached.set()
        status = 201 if scope["method"] == "PUT" else 200
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(SECRET)).encode())]})
        await send({"type": "http.response.body", "body": SECRET})
        self.answered.set()


@pytest.fixture
def held(tmp_path: Path, keys: Any) -> Iterator[tuple[ServerThread, Gate, Upstream, Path]]:
    """A sidecar in front of an :class:`Upstream`, its journal writer behind a :class:`Gate`."""
    upstream = Upstream()
    policy = policy_copy(tmp_path / "policy", POLICIES)
    with ServerThread(upstream, free_port()) as up:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=up.url)
        app = create_app(settings)
        writer = app.sidecar.guard.trail.writer  # type: ignore[attr-defined]
        gate = writer.journal = Gate(writer.journal)
        try:
            with ServerThread(app, free_port()) as sidecar:
                yield sidecar, gate, upstream, tmp_path / "audit.db"
        finally:
            gate.opened.set()


def _auth(keys: Any, caller: str, purpose: str) -> dict[str, str]:
    return {"authorization": f"Bearer {keys.mint(sub=caller)}", "x-purpose": purpose}


def _raw_get(port: int, path: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = [f"GET {path} HTTP/1.1", "host: sidecar", "connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_reads_answer_is_held_until_its_decision_is_durable(
    held: tuple[ServerThread, Gate, Upstream, Path], keys: Any
) -> None:
    sidecar, gate, upstream, db = held
    gate.opened.clear()
    with contextlib.closing(_raw_get(sidecar.port, "/customers/c-1", _auth(
            keys, "svc:crm", "relationship.management"))) as sock:
        # Forwarded while the decision is not durable: the upstream has answered ...
        assert upstream.answered.wait(30)
        assert gate.holding.wait(30)  # ... and the decision's commit is held open.
        ready, _, _ = select.select([sock], [], [], QUIET)
        assert ready == [], "a byte of the upstream's answer left before the decision was durable"
        gate.opened.set()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(SECRET)
    # The upstream was told the decision's id before it was durable: it is the record's id.
    ((_, headers),) = upstream.requests
    rows = audit_rows(db, "http_route = ?", ("/customers/{customer_id}",))
    assert [(r["event_id"], r["kind"], r["allowed"], r["http_status"]) for r in rows] == [
        (headers["x-guard-decision-id"], "decision", 1, 200)]


def test_a_write_is_not_forwarded_before_its_decision_is_durable(
    held: tuple[ServerThread, Gate, Upstream, Path], keys: Any
) -> None:
    sidecar, gate, upstream, db = held
    gate.opened.clear()
    answers: list[httpx.Response] = []
    put = threading.Thread(target=lambda: answers.append(httpx.put(
        f"{sidecar.url}/files/a.txt", content=b"new file", timeout=30,
        headers=_auth(keys, "svc:web", "customer.registration"))))
    put.start()
    try:
        assert gate.holding.wait(30)  # the write's decision is in the held commit
        assert not upstream.reached.wait(QUIET), "the write was forwarded before it was durable"
    finally:
        gate.opened.set()
        put.join(30)
    assert answers[0].status_code == 201
    assert [m for m, _ in upstream.requests] == ["PUT"]
    rows = audit_rows(db, "http_route = ?", ("/files/{name}",))
    assert (rows[0]["kind"], rows[0]["action"], rows[0]["allowed"]) == ("decision", "write", 1)


@pytest.mark.parametrize(("method", "path", "caller", "purpose"), [
    ("GET", "/customers/c-1", "svc:crm", "relationship.management"),
    ("PUT", "/files/a.txt", "svc:web", "customer.registration"),
], ids=["read", "write"])
def test_a_failed_commit_is_a_403_audit_unavailable(
    held: tuple[ServerThread, Gate, Upstream, Path], keys: Any,
    method: str, path: str, caller: str, purpose: str,
) -> None:
    sidecar, gate, upstream, _ = held
    gate.fail = True
    resp = httpx.request(method, sidecar.url + path, content=b"x" if method == "PUT" else None,
                         headers=_auth(keys, caller, purpose), timeout=30)
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["reason"] == "audit_unavailable"
    assert SECRET not in resp.content
    assert "x-guard-decision-id" not in resp.headers  # no record an auditor could find
    # A write never reached the upstream; a read did, and its answer was dropped.
    assert [m for m, _ in upstream.requests] == (["GET"] if method == "GET" else [])


def test_the_check_endpoint_answers_once_the_decision_is_durable(
    held: tuple[ServerThread, Gate, Upstream, Path], keys: Any
) -> None:
    sidecar, gate, _, db = held
    headers = {**_auth(keys, "svc:crm", "relationship.management"),
               "x-original-uri": "/customers/c-1", "x-original-method": "GET"}
    gate.opened.clear()
    with contextlib.closing(_raw_get(sidecar.port, "/v1/check", headers)) as sock:
        assert gate.holding.wait(30)
        ready, _, _ = select.select([sock], [], [], QUIET)
        assert ready == [], "the check answered before its decision was durable"
        gate.opened.set()
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    decision_id = next(line.split(b":", 1)[1].strip().decode() for line in answer.split(b"\r\n")
                       if line.lower().startswith(b"x-guard-decision-id:"))
    assert [r["kind"] for r in audit_rows(db, "event_id = ?", (decision_id,))] == ["decision"]
    gate.fail = True
    refused = httpx.get(sidecar.url + "/v1/check", headers=headers, timeout=30)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "audit_unavailable"
