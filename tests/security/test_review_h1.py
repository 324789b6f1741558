"""Review of the httptools forwarder: nothing a client sends reaches the upstream as a request.

The sidecar runs under real uvicorn (its h11 server, which reads a body by its
``Transfer-Encoding`` when ``Content-Length`` comes too); the upstream is a raw
TCP server that keeps every byte it receives.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httptools
import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, policy_copy, sidecar_settings
from upstreamkit import ThreadedUpstream

from bench._pg import free_port
from middleware.sidecar._h1 import H1Transport, _request_head

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SMUGGLED = b"GET /customers/c-0042 HTTP/1.1\r\nHost: upstream\r\n\r\n"


class RecordingUpstream(ThreadedUpstream):
    """Answers every header block it reads with an empty 200 and keeps all it received."""

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()
        self._lock = threading.Lock()
        self.start()

    def handle(self, conn: socket.socket) -> None:
        seen = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.received += data
            seen += data
            while b"\r\n\r\n" in seen:
                _, seen = seen.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


class H11Server(ServerThread):
    """The sidecar under uvicorn's h11 server (the pure-Python one, also used by hypercorn)."""

    def __init__(self, app: Any, port: int) -> None:
        super().__init__(app, port)
        self.server.config.http = "h11"


@pytest.fixture
def sidecar(tmp_path: Path, keys: Any) -> Iterator[tuple[H11Server, RecordingUpstream]]:
    from middleware.sidecar import create_app

    upstream = RecordingUpstream()
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings_ = sidecar_settings(tmp_path, policy, keys.identity(),
                                 upstream=f"http://127.0.0.1:{upstream.port}")
    try:
        with H11Server(create_app(settings_), free_port()) as server:
            yield server, upstream
    finally:
        upstream.close()


def _raw(port: int, request: bytes) -> bytes:
    """Send ``request`` on one connection; everything the sidecar answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (data := conn.recv(65536)):
            answer += data
    return answer


def test_a_body_past_its_content_length_never_reaches_the_upstream(
    sidecar: tuple[H11Server, RecordingUpstream], keys: Any
) -> None:
    """Content-Length: 0 with a chunked body: the body must not follow a head that says 0."""
    server, upstream = sidecar
    token = keys.mint("hs", sub="svc:crm")
    chunk = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    answer = _raw(server.port, (
        b"PUT /files/a HTTP/1.1\r\nHost: sidecar\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"X-Purpose: relationship.management\r\n"
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk))
    assert answer.startswith(b"HTTP/1.1 "), answer
    assert b"/customers/c-0042" not in bytes(upstream.received)


async def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize(("length", "chunks"), [
    (b"0", (SMUGGLED,)),
    (b"5", (b"abc", b"de" + SMUGGLED)),
    (b"10", (b"short",)),
])
async def test_the_transport_sends_exactly_the_declared_length(
    length: bytes, chunks: tuple[bytes, ...]
) -> None:
    """A body longer or shorter than its Content-Length is refused, and no byte past it leaves."""
    upstream = RecordingUpstream()
    try:
        transport = H1Transport(max_connections=1)
        import httpcore

        url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=upstream.port, target=b"/a")
        with pytest.raises(httpx.LocalProtocolError):
            await transport.send(b"PUT", url, [(b"host", b"u"), (b"content-length", length)],
                                 _body(*chunks), {"timeout": httpx.Timeout(5).as_dict()})
        await asyncio.sleep(0.05)
        assert SMUGGLED not in bytes(upstream.received)
        assert b"GET " not in bytes(upstream.received)
        await transport.aclose()
    finally:
        upstream.close()


_NAME = st.binary(min_size=0, max_size=8)
_VALUE = st.binary(min_size=0, max_size=8)


class _Parsed:
    """What an HTTP/1.1 server reads from a request head (httptools, as uvicorn does)."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.complete = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.complete += 1


@settings(max_examples=400, deadline=None)
@example(method=b"GET", headers=[(b"x-a\nx-b", b"1")])  # a name that is two names
@example(method=b"GET\nX", headers=[])
@example(method=b"GET", headers=[(b"!", b"! ")])  # a trailing blank is kept, as sent
@given(method=st.sampled_from([b"GET", b"PUT", b"GET\nX", b"G T", b""]),
       headers=st.lists(st.tuples(_NAME, _VALUE), max_size=4))
def test_a_head_is_refused_or_read_back_exactly_as_given(
    method: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Every head the forwarder writes holds the headers given, no more, no fewer, in order."""
    try:
        head = _request_head(method, b"/a", headers)
    except httpx.LocalProtocolError:
        return
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare line feed a server may split on
    parsed = _Parsed()
    parser = httptools.HttpRequestParser(parsed)
    parser.feed_data(head)
    assert parsed.complete == 1
    assert parser.get_method() == method
    assert parsed.url == b"/a"
    # httptools (as uvicorn) drops a value's leading blanks and keeps its trailing ones
    assert parsed.headers == [(name, value.lstrip(b" \t")) for name, value in headers]


@pytest.mark.anyio
async def test_a_waiter_cancelled_as_it_is_woken_passes_the_connection_on() -> None:
    """The pool's one free connection is handed to the next waiter, not lost with a cancelled one.

    Two requests wait for the only connection; the first is woken by the release
    and cancelled before it runs (its client went away). The second must get the
    connection, not wait out its pool timeout with the connection idle.
    """
    import httpcore

    upstream = RecordingUpstream()
    transport = H1Transport(max_connections=1)
    url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=upstream.port, target=b"/a")

    async def get(pool_seconds: float) -> bytes:
        timeouts = httpx.Timeout(10, pool=pool_seconds).as_dict()
        answer = await transport.send(b"GET", url, [(b"host", b"u")], None, {"timeout": timeouts})
        try:
            return b"".join([chunk async for chunk in answer.body])
        finally:
            await answer.body.aclose()

    try:
        held = await transport.send(b"GET", url, [(b"host", b"u")], None,
                                    {"timeout": httpx.Timeout(10).as_dict()})
        first = asyncio.ensure_future(get(10))
        second = asyncio.ensure_future(get(2))
        for _ in range(1000):  # until both wait for the connection
            if len(transport._queue) == 2:
                break
            await asyncio.sleep(0.01)
        assert [chunk async for chunk in held.body] == []
        await held.body.aclose()  # the connection is free: the first waiter is woken ...
        first.cancel()  # ... and cancelled before it runs
        assert await second == b""  # the second gets the connection, not a PoolTimeout
        with pytest.raises(asyncio.CancelledError):
            await first
        await transport.aclose()
    finally:
        upstream.close()


@pytest.mark.anyio
async def test_an_upgrade_answer_is_a_protocol_error_not_a_crashed_protocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``101`` the sidecar never asked for fails the request cleanly (no asyncio fatal error)."""
    import httpcore

    async def upgrading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                     b"Connection: upgrade\r\n\r\nraw bytes of another protocol")
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(upgrading, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = H1Transport(max_connections=1)
    url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=b"/a")
    try:
        with caplog.at_level("ERROR", logger="asyncio"), pytest.raises(httpx.RemoteProtocolError):
            await transport.send(b"GET", url, [(b"host", b"u")], None,
                                 {"timeout": httpx.Timeout(5).as_dict()})
        assert not [r for r in caplog.records if r.name == "asyncio"]
    finally:
        await transport.aclose()
        server.close()
