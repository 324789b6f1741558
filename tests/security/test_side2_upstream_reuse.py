"""Review of the forwarder's kept-alive connections: no answer is ever handed to another request.

A connection goes back to the pool only when nothing about it is in doubt. Bytes
the upstream sent past an answer (in the same packet, or already waiting in the
socket when the connection is picked again), a ``HEAD`` answer followed by a body,
or an answer that came before the request was fully sent all mean the connection
is out of step: the next request on it could read those bytes (another caller's
data, or an answer to a request nobody judged) as its own answer. Each upstream
here is a raw TCP (or TLS) server on loopback that misbehaves in one such way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpcore
import httpx
import pytest
from opskit import self_signed_certificate
from upstreamkit import ThreadedUpstream, read_head

from middleware.sidecar._h1 import H1Transport
from middleware.sidecar._transport import Forwarder, upstream_transport

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SECRET = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: u\r\n\r\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Upstream(ThreadedUpstream):
    """Answers each request head with ``answer(head)``, counting connections; TLS optional."""

    def __init__(self, server_tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.connections = 0
        self.answered = threading.Event()
        """An answer (and whatever it sends past it) is in the socket."""
        self._tls = server_tls
        self._lock = threading.Lock()
        self.start()

    def _run(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            with conn:
                self.handle(conn)
        except OSError:
            pass

    def handle(self, conn: socket.socket) -> None:
        while (head := read_head(conn)) is not None:
            self.answer(conn, head)
            self.answered.set()

    def answer(self, conn: socket.socket, head: bytes) -> None:
        conn.sendall(OK)


class SamePacket(Upstream):
    """A whole second answer right behind the first, in one write."""

    def answer(self, conn: socket.socket, head: bytes) -> None:
        conn.sendall(OK + SECRET)


class HeadWithBody(Upstream):
    """A ``HEAD`` answer declaring a body, and the body (itself an answer) right behind it."""

    def answer(self, conn: socket.socket, head: bytes) -> None:
        if head.startswith(b"HEAD "):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(SECRET), SECRET))
        else:
            conn.sendall(OK)


class Late(Upstream):
    """A second answer 50 ms after the first (it waits in the socket until someone reads)."""

    def answer(self, conn: socket.socket, head: bytes) -> None:
        conn.sendall(OK)
        time.sleep(0.05)
        conn.sendall(SECRET)


class EarlyAndLagging(ThreadedUpstream):
    """Answers a request at its head (its body unread) and reads the body as the next request.

    It answers each later request only once the one after it has arrived (one
    behind, as a pipelining server may): the answer to the smuggled request lands
    just after the sidecar sent the next real one on the same connection.
    """

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.answered = threading.Event()
        """The first request is answered (its body unread)."""
        self.start()

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1
        buffered, pending, first = b"", b"", True
        while True:
            while b"\r\n\r\n" not in buffered:
                data = conn.recv(65536)
                if not data:
                    return
                buffered += data
            head, buffered = buffered.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1]
            if first:
                first = False
                conn.sendall(_echo(path))
                self.answered.set()
                continue
            if pending:
                conn.sendall(_echo(pending) + _echo(path))
                pending = b""
            else:
                pending = path


def _echo(path: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(path), path)


def _timeouts() -> dict[str, object]:
    return {"timeout": httpx.Timeout(5).as_dict()}


async def _ask(transport: Forwarder, scheme: bytes, port: int, method: bytes = b"GET",
               target: bytes = b"/a", body: AsyncIterator[bytes] | None = None,
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    url = httpcore.URL(scheme=scheme, host=b"127.0.0.1", port=port, target=target)
    answer = await transport.send(method, url, [(b"host", b"u"), *headers], body, _timeouts())
    try:
        return b"".join([chunk async for chunk in answer.body])
    finally:
        await answer.body.aclose()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a self-signed 127.0.0.1 certificate."""
    cert_file, key_file = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Started = Callable[[type[Upstream]], Upstream]


@pytest.fixture
def pool(scheme: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
         ) -> Iterator[tuple[Forwarder, Started]]:
    """The transport ``guard sidecar`` uses for the scheme, and a starter of upstreams."""
    started: list[Upstream] = []

    def start(kind: type[Upstream]) -> Upstream:
        started.append(kind(tls[0] if scheme == "https" else None))
        return started[-1]

    yield upstream_transport(scheme, max_connections=4,
                             ssl_context=tls[1] if scheme == "https" else None), start
    for upstream in started:
        upstream.close()


@pytest.mark.parametrize("kind", [SamePacket, HeadWithBody, Late])
async def test_bytes_past_an_answer_are_never_the_next_answer(
    kind: type[Upstream], scheme: str, pool: tuple[Forwarder, Started]
) -> None:
    """The second request gets its own answer on a new connection, never the stray bytes."""
    transport, start = pool
    upstream = start(kind)
    first = await _ask(transport, scheme.encode(), upstream.port,
                       b"HEAD" if kind is HeadWithBody else b"GET")
    assert first == (b"" if kind is HeadWithBody else b"ok")
    # The stray bytes are in the socket, the event loop has not read them yet (a busy
    # loop, or the next request picked in the same turn): the pool must look. (Late's
    # came 50 ms after the answer: a sleep was no proof they had come on a loaded machine.)
    assert upstream.answered.wait(30)  # blocks on purpose: the event loop must not run
    assert await _ask(transport, scheme.encode(), upstream.port) == b"ok"
    await transport.aclose()
    assert upstream.connections == 2


async def test_the_pool_still_reuses_a_clean_connection(
    scheme: str, pool: tuple[Forwarder, Started]
) -> None:
    """The checks cost no reuse of a connection in step (with or without a busy loop)."""
    transport, start = pool
    upstream = start(Upstream)
    for _ in range(3):
        assert await _ask(transport, scheme.encode(), upstream.port) == b"ok"
        time.sleep(0.05)  # noqa: ASYNC251 - on purpose, as above
    await transport.aclose()
    assert upstream.connections == 1


async def test_an_answer_before_the_whole_request_was_sent_is_not_reused() -> None:
    """A body the upstream did not read as a body may be read as a request nobody judged."""

    async def slow_body() -> AsyncIterator[bytes]:
        # The answer is in the socket (a fixed sleep was no proof of it under load): the
        # loop reads it before this generator runs on (the wake-up comes after the data).
        assert await asyncio.to_thread(upstream.answered.wait, 30)
        yield SMUGGLED

    upstream = EarlyAndLagging()
    transport = H1Transport(max_connections=1)
    try:
        length = (b"content-length", str(len(SMUGGLED)).encode())
        assert await _ask(transport, b"http", upstream.port, b"POST", b"/first", slow_body(),
                          (length,)) == b"/first"
        assert await _ask(transport, b"http", upstream.port, target=b"/second") == b"/second"
        assert upstream.connections == 2
    finally:
        await transport.aclose()
        upstream.close()


async def test_an_answer_streamed_while_the_body_is_sent_still_arrives_whole() -> None:
    """An upstream may answer while it reads the body (full duplex): the body is still sent."""
    received = bytearray()
    done = threading.Event()

    class Duplex(ThreadedUpstream):
        def handle(self, conn: socket.socket) -> None:
            head = read_head(conn)
            assert head is not None
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            rest = head.split(b"\r\n\r\n", 1)[1]
            received.extend(rest)
            while len(received) < 10 and (data := conn.recv(65536)):
                received.extend(data)
            done.set()

    async def body() -> AsyncIterator[bytes]:
        yield b"01234"
        await asyncio.sleep(0.1)
        yield b"56789"

    upstream = Duplex()
    upstream.start()
    transport = H1Transport(max_connections=1)
    try:
        assert await _ask(transport, b"http", upstream.port, b"PUT", b"/up", body(),
                          ((b"content-length", b"10"),)) == b"ok"
        assert await asyncio.to_thread(done.wait, 30)  # the upstream read all it will read
        assert bytes(received) == b"0123456789"
    finally:
        await transport.aclose()
        upstream.close()


async def test_an_https_upstream_with_an_untrusted_certificate_is_refused(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The default TLS settings verify the upstream: a self-signed certificate is refused."""
    upstream = Upstream(tls[0])
    transport = upstream_transport("https", max_connections=1)
    try:
        with pytest.raises(httpx.ConnectError):
            await _ask(transport, b"https", upstream.port)
    finally:
        await transport.aclose()
        upstream.close()
