"""Thirteenth review: a client's ``Connection`` header never unframes what the sidecar forwards.

RFC 9110 §7.6.1 lets a ``Connection`` header name further hop-by-hop fields, and the proxy
drops the fields it names. ``Connection: content-length`` named the very field that frames the
client's body: the head went upstream without a length and the body after it, so the
upstream read the body as a request of its own, carrying whatever caller header the client
wrote in it, judged by no guard and in no trail. The upstream here parses what it receives
with httptools, as uvicorn would.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpcore
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, policy_copy, poll, sidecar_settings
from test_review_h1 import RecordingUpstream
from test_side2_framing import ParsingUpstream

from bench._pg import free_port
from middleware.sidecar._h1 import H1Transport
from middleware.sidecar._server import HTTP_PROTOCOL

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SMUGGLED = (b"PUT /files/smuggled HTTP/1.1\r\nHost: upstream\r\nX-Guard-Caller: svc:admin\r\n"
            b"Content-Length: 0\r\n\r\n")


class Served(NamedTuple):
    server: ServerThread
    upstream: ParsingUpstream
    token: str


@pytest.fixture(scope="module", params=["guard", "h11"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Any
           ) -> Iterator[Served]:
    """The sidecar under the server ``guard sidecar`` runs, or uvicorn's h11 server."""
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp(f"hop-{request.param}")
    upstream = ParsingUpstream()
    policy = policy_copy(tmp / "policy", POLICIES)
    settings_ = sidecar_settings(tmp, policy, keys.identity(),
                                 upstream=f"http://127.0.0.1:{upstream.port}")
    http = HTTP_PROTOCOL if request.param == "guard" else "h11"
    try:
        with ServerThread(create_app(settings_), free_port(), http=http) as server:
            yield Served(server, upstream, keys.mint("hs", sub="svc:crm"))
    finally:
        upstream.close()


def _send(port: int, request: bytes, wait: float = 1.5) -> bytes:
    """Send ``request`` and read what comes back for a moment (the connection kept open, so
    the sidecar reads the whole body as it would from a client that waits for its answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        conn.settimeout(wait)
        got = b""
        try:
            while data := conn.recv(65536):
                got += data
        except TimeoutError:
            pass
        return got


def _asked(upstream: ParsingUpstream, before: int) -> list[tuple[bytes, bytes]]:
    """(target, body) of every request the upstream parsed since ``before``."""
    return [(m.url, m.body) for m in upstream.messages[before:]]


CONNECTIONS = [b"content-length", b"keep-alive, Content-Length", b"Content_Length",
               b"close,content-length"]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_a_connection_header_naming_the_length_never_unframes_the_body(
        served: Served, connection: bytes) -> None:
    """A write the caller may make, and a public route asked with no token at all: the
    upstream reads one request, with the body the client sent, and never the one inside it."""
    token = b"Authorization: Bearer " + served.token.encode() + b"\r\n"
    for head, target in ((b"PUT /files/a HTTP/1.1\r\n" + token
                          + b"X-Purpose: relationship.management\r\n", b"/files/a"),
                         (b"GET /public/page HTTP/1.1\r\n", b"/public/page")):
        before = len(served.upstream.messages)
        _send(served.server.port, head + b"Host: sidecar\r\nConnection: " + connection
              + b"\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
        poll(lambda before=before: len(served.upstream.messages) > before)
        asked = _asked(served.upstream, before)
        assert asked == [(target, SMUGGLED)], asked
        assert served.upstream.errors == []


def test_a_body_is_still_forwarded_with_its_length(served: Served) -> None:
    before = len(served.upstream.messages)
    _send(served.server.port, (
        b"PUT /files/a HTTP/1.1\r\nHost: sidecar\r\nAuthorization: Bearer "
        + served.token.encode() + b"\r\nX-Purpose: relationship.management\r\n"
        b"Connection: keep-alive, X-Trace\r\nX-Trace: 1\r\nContent-Length: 5\r\n\r\nhello"))
    poll(lambda: len(served.upstream.messages) > before)
    message = served.upstream.messages[before]
    assert (message.url, message.body) == (b"/files/a", b"hello")
    assert (b"content-length", b"5") in message.headers
    assert all(name != b"x-trace" for name, _ in message.headers)


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
async def test_the_transport_refuses_a_body_with_no_framing() -> None:
    """Whatever drops a body's framing on the way, the transport sends no byte of it."""
    upstream = RecordingUpstream()
    try:
        transport = H1Transport(max_connections=1)
        url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=upstream.port, target=b"/a")
        with pytest.raises(httpx.LocalProtocolError):
            await transport.send(b"PUT", url, [(b"host", b"u")], _chunks(SMUGGLED),
                                 {"timeout": httpx.Timeout(5).as_dict()})
        await asyncio.sleep(0.05)
        assert bytes(upstream.received) == b""
        await transport.aclose()
    finally:
        upstream.close()


_NAMES = ["content-length", "Content-Length", "CONTENT_LENGTH", "transfer-encoding", "host",
          "x-guard-caller", "x-guard-purpose", "x-guard-decision-id", "x-purpose",
          "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "authorization",
          "keep-alive", "close", "upgrade", "te", "expect", "x-trace"]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(st.sampled_from(_NAMES), min_size=1, max_size=6),
       body=st.binary(min_size=1, max_size=64))
def test_no_connection_header_changes_what_the_upstream_reads(
        served: Served, tokens: list[str], body: bytes) -> None:
    """Whatever a client's Connection header names, the upstream parses one request: the one
    judged, with the body the client sent, the caller and purpose the guard proved."""
    before = len(served.upstream.messages)
    _send(served.server.port, (
        b"PUT /files/a HTTP/1.1\r\nHost: sidecar\r\nAuthorization: Bearer "
        + served.token.encode() + b"\r\nX-Purpose: relationship.management\r\n"
        b"Connection: " + ", ".join(tokens).encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body), wait=0.3)
    poll(lambda: len(served.upstream.messages) > before)
    (message,) = served.upstream.messages[before:]
    assert (message.url, message.body) == (b"/files/a", body)
    headers = dict(message.headers)
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"x-guard-caller"] == b"svc:crm"
    assert headers[b"x-guard-purpose"] == b"relationship.management"
    assert served.upstream.errors == []
