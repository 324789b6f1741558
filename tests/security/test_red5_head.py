"""Fifth review: a request head the sidecar reads is bounded.

uvicorn's httptools parser sets no bound on a request's head: a client with no
credentials that sent one header line without end (or thousands of headers) had
``guard sidecar`` keep every byte of it, for as long as it kept sending, on every
connection it opened. The server ``guard sidecar`` runs now refuses a head past
64 KiB as it refuses bytes it cannot parse: a recorded ``malformed_request``
denial and a problem+json 400, the connection closed. A head within the bound
(nginx's default buffers allow 32 KiB) is served as before.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, poll, sidecar_settings

from bench._pg import free_port
from middleware.sidecar._server import HEAD_LIMIT, HTTP_PROTOCOL

POLICIES = Path(__file__).resolve().parents[2] / "policies"
REFUSED = "kind = 'decision' AND reason = 'malformed_request'"


class Served(NamedTuple):
    port: int
    db: Path
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[Served]:
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp("head")
    settings = sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES), keys.identity())
    with ServerThread(create_app(settings), free_port(), http=HTTP_PROTOCOL) as server:
        yield Served(server.port, tmp / "audit.db", keys.mint("hs", sub="svc:crm"))


def _send_head(port: int, head: bytes, endless: int = 0) -> bytes:
    """Send ``head`` (then ``endless`` more bytes of its last header line); the answer read."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(head)
            chunk = b"a" * 65536
            for _ in range(endless // len(chunk)):
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while it sent: the answer is still there to read
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    return answer


def test_an_endless_header_line_is_refused_and_recorded(served: Served) -> None:
    before = len(audit_rows(served.db, REFUSED))
    answer = _send_head(served.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\nX-Long: ", 4 << 20)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"application/problem+json" in answer
    assert b"malformed_request" in answer
    poll(lambda: len(audit_rows(served.db, REFUSED)) > before)


def test_many_headers_past_the_bound_are_refused(served: Served) -> None:
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(HEAD_LIMIT // 32))
    answer = _send_head(served.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_a_head_within_the_bound_is_served(served: Served) -> None:
    some = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(300))  # about 20 KiB
    answer = _send_head(served.port, b"GET /echo/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        + b"Authorization: Bearer " + served.token.encode()
                        + b"\r\nX-Purpose: relationship.management\r\n" + some + b"\r\n")
    assert not answer.startswith(b"HTTP/1.1 400 "), answer[:300]
