"""Seventh review, found sound: an absolute-form target and a repeated ``Host`` through the
sidecar's proxy reach the upstream as the one request the guard judged.

uvicorn hands the sidecar only the path of an absolute-form target
(``GET http://other.example/customers/c-0001``); the sidecar judges that path and sends
it upstream in origin form with the upstream's own ``Host``, so the authority the client
named never reaches the upstream's routing. Two ``Host`` lines leave one ``Host`` (the
upstream's) and one ``X-Forwarded-Host``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, sidecar_settings

from bench._pg import free_port
from middleware.sidecar._server import HTTP_PROTOCOL
from tests.security.test_side2_framing import ParsingUpstream

POLICIES = Path(__file__).resolve().parents[2] / "policies"


class Served(NamedTuple):
    server: ServerThread
    upstream: ParsingUpstream
    db: Path
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[Served]:
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp("red7targets")
    upstream = ParsingUpstream()
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(tmp, policy, keys.identity(),
                                upstream=f"http://127.0.0.1:{upstream.port}")
    try:
        with ServerThread(create_app(settings), free_port(), http=HTTP_PROTOCOL) as server:
            yield Served(server, upstream, tmp / "audit.db", keys.mint("hs", sub="svc:crm"))
    finally:
        upstream.close()


def _ask(served: Served, line: bytes, *more: bytes) -> bytes:
    head = (line + b"\r\nAuthorization: Bearer " + served.token.encode()
            + b"\r\nX-Purpose: relationship.management\r\n" + b"".join(m + b"\r\n" for m in more)
            + b"Connection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=20) as sock:
        sock.sendall(head)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def test_an_absolute_form_target_reaches_the_upstream_as_the_path_judged(served: Served) -> None:
    served.upstream.messages.clear()
    answer = _ask(served, b"GET http://other.example/customers/c-0001 HTTP/1.1",
                  b"Host: other.example")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    [message] = served.upstream.messages
    assert message.url == b"/customers/c-0001"
    assert [v for n, v in message.headers if n == b"host"] == [
        f"127.0.0.1:{served.upstream.port}".encode()]
    last = audit_rows(served.db, "kind = 'decision'")[-1]
    assert (last["http_route"], last["allowed"]) == ("/customers/{customer_id}", 1)


def test_two_host_lines_leave_the_upstreams_host_and_one_forwarded_host(served: Served) -> None:
    served.upstream.messages.clear()
    answer = _ask(served, b"GET /customers/c-0001 HTTP/1.1", b"Host: a.example",
                  b"Host: b.example")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    [message] = served.upstream.messages
    names = [n for n, _ in message.headers]
    assert names.count(b"host") == 1
    assert names.count(b"x-forwarded-host") == 1
    assert dict(message.headers)[b"host"] == f"127.0.0.1:{served.upstream.port}".encode()
