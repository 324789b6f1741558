"""One refused request is one audit event under the server ``guard sidecar`` runs.

A ``Transfer-Encoding`` the sidecar's framing rule refuses but the server's parser
refuses only once the body starts (``xchunked``) reached both refusals: the app's
(``request_framing``) and the parser's (``request_syntax``). Each such request is
now the app's one event, whose id the client's 400 carries.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httptools
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, sidecar_settings
from upstreamkit import ThreadedUpstream

from bench._pg import free_port
from middleware.sidecar._server import HTTP_PROTOCOL

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BODY = b"5\r\nhello\r\n0\r\n\r\n"


class _Upstream(ThreadedUpstream):
    """Counts the connections made to it (none: nothing refused is forwarded)."""

    connections = 0

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1


class Served(NamedTuple):
    port: int
    upstream: _Upstream
    db: Path
    token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[Served]:
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp("side3-framing")
    upstream = _Upstream()
    upstream.start()
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(tmp, policy, keys.identity(),
                                upstream=f"http://127.0.0.1:{upstream.port}")
    try:
        with ServerThread(create_app(settings), free_port(), http=HTTP_PROTOCOL) as server:
            yield Served(server.port, upstream, tmp / "audit.db", keys.mint("hs", sub="svc:crm"))
    finally:
        upstream.close()


class _Answer:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.count += 1


def _exchange(port: int, parts: list[bytes]) -> tuple[int, _Answer]:
    """Send ``parts`` (a moment apart), read until the sidecar closes; the first answer."""
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for number, part in enumerate(parts):
            if number:
                time.sleep(0.2)  # a later packet: the app may have judged the head already
            try:
                conn.sendall(part)
            except OSError:
                break  # the sidecar answered and closed before this part
        received = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                break
            if not data:
                break
            received += data
    try:
        parser.feed_data(received)
    except httptools.HttpParserError:
        pytest.fail(f"more than one answer: {received!r}")
    return parser.get_status_code(), answer


def _head(token: str, coding: bytes) -> bytes:
    return (b"POST /customers/c-0001/notes HTTP/1.1\r\nHost: sidecar\r\n"
            b"Authorization: Bearer " + token.encode()
            + b"\r\nX-Purpose: relationship.management\r\nTransfer-Encoding: " + coding
            + b"\r\n\r\n")


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "body-later"])
@pytest.mark.parametrize("coding", [b"xchunked", b"chunkedx", b"gzip", b"identity",
                                    b"gzip, chunked, x"])
def test_a_coding_the_parser_refuses_after_the_head_is_one_event(
    served: Served, coding: bytes, split: bool
) -> None:
    before = len(audit_rows(served.db, "kind = 'decision'"))
    head = _head(served.token, coding)
    status, answer = _exchange(served.port, [head, BODY] if split else [head + BODY])
    assert status == 400, answer.body
    assert answer.count == 1
    assert answer.headers.get(b"content-type") == b"application/problem+json"
    assert json.loads(answer.body)["reason"] == "malformed_request"
    decision_id = answer.headers[b"x-guard-decision-id"].decode()
    # The connection is closed: whatever the request recorded was recorded before.
    rows = audit_rows(served.db, "kind = 'decision'")[before:]
    assert [(r["event_id"], r["allowed"], r["reason"], r["http_route"], r["http_status"])
            for r in rows] == [(decision_id, 0, "malformed_request", "<refused>", 400)]
    refusal = (rows[0]["caller"], rows[0]["http_method"], json.loads(rows[0]["rule"]))
    if coding == b"gzip, chunked, x":  # refused by the parser with the head: none of it believed
        assert refusal == ("", "-", ["check:malformed_request:request_syntax"])
    else:  # refused by the parser after the head, which the app judged and refused
        assert refusal == ("svc:crm", "POST", ["check:malformed_request:request_framing"])
    assert served.upstream.connections == 0
