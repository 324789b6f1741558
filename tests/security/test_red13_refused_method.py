"""Thirteenth review: a refused target's event holds the method within its bound.

The proxy refuses a target it cannot judge (a ``;`` parameter, an encoded ``/``, a dot
segment) and a body framed two ways, and records the refusal with the request's method. The
method went into the event as the server handed it over: uvicorn's ``h11`` server takes a
method of some 15,000 characters, so a client with no credentials put that much into each
refusal recorded (the bound on a method elsewhere is 32 characters).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, sidecar_settings

from bench._pg import free_port
from middleware._bounds import MAX_METHOD

POLICIES = Path(__file__).resolve().parents[2] / "policies"
LONG = b"X" * 15_000


class Served(NamedTuple):
    server: ServerThread
    db: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[Served]:
    """The sidecar under uvicorn's h11 server (as ``uvicorn --http h11`` runs it)."""
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp("refused-method")
    policy = policy_copy(tmp / "policy", POLICIES)
    settings_ = sidecar_settings(tmp, policy, keys.identity(), upstream="http://127.0.0.1:9")
    with ServerThread(create_app(settings_), free_port(), http="h11") as server:
        yield Served(server, tmp / "audit.db")


def _status(port: int, request: bytes) -> bytes:
    """What the sidecar answers ``request``, until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        head = b""
        while chunk := conn.recv(4096):
            head += chunk
    return head


@pytest.mark.parametrize(("method", "target", "framing"), [
    (LONG + b"A", b"/customers/c-1;x", b""),
    (LONG + b"B", b"/customers/%2Fc-1", b""),
    (LONG + b"C", b"/files/a", b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"),
])
def test_a_refused_targets_event_holds_a_bounded_method(
        served: Served, method: bytes, target: bytes, framing: bytes) -> None:
    body = b"2\r\nab\r\n0\r\n\r\n" if framing else b""
    status = _status(served.server.port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                     + framing + b"Connection: close\r\n\r\n" + body)
    assert status.startswith(b"HTTP/1.1 400"), status[:300]
    rows = audit_rows(served.db, "http_route = ?", ("<refused>",))
    assert rows
    assert all(len(row["http_method"] or "") <= MAX_METHOD for row in rows), [
        len(row["http_method"]) for row in rows]


def test_a_refused_targets_event_keeps_a_plain_method(served: Served) -> None:
    status = _status(served.server.port,
                     b"PATCH /customers/c-1;x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400"), status[:300]
    rows = audit_rows(served.db, "http_route = ? AND http_method = ?", ("<refused>", "PATCH"))
    assert len(rows) == 1
