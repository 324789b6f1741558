"""HTTP/1.1 to a plain ``http://`` upstream: asyncio protocols parsed by ``httptools``.

The forward of a proxied request without httpcore's pool, h11's event objects
or anyio's cancel scopes: each connection is an :class:`asyncio.Protocol` that
feeds what the socket delivers to uvicorn's C parser (``httptools``), and the
proxy reads the answer's start and body from it. It keeps what the proxy
relies on: per-call connect, read, write and pool timeouts; the request body
streamed upstream as it arrives (chunked when the client's was); the answer's
body streamed back with reading paused while too much waits; kept-alive
connections reused, one the server closed while idle replaced; errors as
httpx's exceptions of the same meaning.
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, cast

import httpcore
import httptools
import httpx

HIGH_WATER = 256 * 1024
"""Stop reading from the socket while this many bytes of the body wait for the proxy ..."""
LOW_WATER = 64 * 1024
"""... and read again once fewer than this many do."""

MAX_HEAD = 64 * 1024
"""The most bytes received before an answer's headers are complete (interim answers included)."""

_NAMES = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


class _Conn(asyncio.Protocol):
    """One kept-alive connection; the answer to the request in flight is parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.broken = False  # closed, or spoke out of turn: never reused
        self._fd = -1
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._reading_paused = False
        self._reset(head=False)

    def _reset(self, *, head: bool) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self.started = False  # the answer's status line and headers are in
        self.complete = False
        self.reusable = False
        self.error: Exception | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self._head = head
        self._until_eof = False
        self.unsent = False  # the request is not yet all written (see :meth:`begin`)

    # -- the proxy's side ---------------------------------------------------------------------

    def begin(self, head: bool, body: bool = False) -> None:
        """Expect the answer to a new request (``head``: it has no body; ``body``: one
        follows the request's head, and :attr:`unsent` stays true until it is written)."""
        self._reset(head=head)
        self.unsent = body
        self._parser = httptools.HttpResponseParser(self)

    def stale(self) -> bool:
        """True when the idle connection cannot take a request: broken, or its socket has
        something to read (bytes the upstream sent out of turn, or its end) that the event
        loop has not delivered yet."""
        if self.broken or self._fd < 0:
            return True
        poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        return bool(poll.poll(0))

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise httpx.WriteError("the connection is closed")
        transport.write(data)

    async def drain(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Wait while the socket's buffer is full."""
        if self._writing_paused:
            self._writer = self._loop.create_future()
            await _wait(self._loop, self._writer, timeout, httpx.WriteTimeout)
            if self.transport is None or self.transport.is_closing():
                raise httpx.WriteError("the connection closed while writing")

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Wait until the parser has more (or the connection ended)."""
        self._waiter = self._loop.create_future()
        await _wait(self._loop, self._waiter, timeout, httpx.ReadTimeout)

    def take(self) -> bytes:
        """The body bytes parsed so far."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.size = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        self.broken = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # the server spoke while idle (or past an answer): not reusable
            self.close()
            return
        try:
            parser.feed_data(data)
            if not self.started:
                self._head_size += len(data)
                if self._head_size > MAX_HEAD:
                    raise httptools.HttpParserError("the headers are too large")
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.error = httpx.RemoteProtocolError(  # a 101 was never asked for
                "an answer switching protocols" if isinstance(exc, httptools.HttpParserUpgrade)
                else f"malformed answer: {exc}")
            self._parser = None
            self.close()
        if self.size > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def _ended(self, exc: Exception | None) -> None:
        self.broken = True
        if self._parser is not None and not self.complete:
            if self.started and self._until_eof and exc is None:
                self.complete = True  # a body framed by the end of the connection
            elif self.error is None:
                self.error = (httpx.ReadError(str(exc) or type(exc).__name__) if exc is not None
                              else httpx.RemoteProtocolError(
                                  "the server closed the connection before the answer ended"
                                  if self.started else
                                  "the server disconnected without sending an answer"))
        self._parser = None
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the answer: the connection is out of step, never reused
            self.broken = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))
        else:  # a header past the answer: out of step
            self.broken = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser is None or self.complete:  # bytes past the answer: never reused
            self.broken = True
            return
        status = parser.get_status_code()
        if status < 200:  # an interim answer (100, 103): its headers are not the answer's
            self.headers = []
            return
        self.status, self.started = status, True
        if self.unsent:  # answered before the request was all sent: the upstream may read
            self.broken = True  # the rest as a request of its own; the connection ends here
        if self._head:  # no body follows, whatever the headers say
            self.complete, self.reusable = True, parser.should_keep_alive()
            self._parser = None
            return
        framed = False
        for name, value in self.headers:
            low = name.lower()
            if low == b"content-length" or (
                    low == b"transfer-encoding" and value.lower().endswith(b"chunked")):
                framed = True
        self._until_eof = not framed and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)
            self.size += len(body)
        else:  # a body past the answer (a HEAD answer's): out of step
            self.broken = True

    def on_message_complete(self) -> None:
        parser = self._parser
        if parser is None or not self.started:  # the end of an interim answer
            return
        self.complete = True
        self.reusable = not self._until_eof and parser.should_keep_alive()
        self._parser = None


async def _wait(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None],
    seconds: float | None,
    error: type[httpx.TimeoutException],
) -> None:
    """Await ``future``; raise ``error`` when it is not resolved within ``seconds``."""
    if seconds is None:
        await future
        return
    timer = loop.call_later(seconds, _expire, future, error)
    try:
        await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[None], error: type[httpx.TimeoutException]) -> None:
    if not future.done():
        future.set_exception(error("timed out"))


class H1Body:
    """The answer's body as it arrives; :meth:`aclose` returns the connection to the pool."""

    __slots__ = ("_conn", "_pool", "_read_timeout")

    def __init__(self, pool: H1Transport, conn: _Conn, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._read_timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        while True:
            if conn.size:
                yield conn.take()
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return
            await conn.wait(self._read_timeout)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, conn.complete and conn.reusable and not conn.size)


class H1Answer:
    """The upstream's answer: status, raw headers, and its body still to read."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: H1Body) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class H1Transport:
    """HTTP/1.1 to one upstream (plain TCP, or TLS) over a pool of kept-alive connections.

    A connection is reused only when nothing about it is in doubt: its answer was
    read to the end, the answer did not start before the request was all sent,
    no byte came past the answer, and its socket has nothing waiting to be read
    when it is picked again.

    Args:
        max_connections: Most connections open at once (all may be kept alive).
        keepalive_expiry: Seconds an idle connection is kept.
        ssl_context: TLS for an ``https://`` upstream (None: plain TCP).
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._tls = ssl_context
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._idle: list[_Conn] = []
        self._open = 0
        self._queue: list[asyncio.Future[None]] = []  # requests waiting for a connection slot
        self._closed = False

    async def send(
        self,
        method: bytes,
        url: httpcore.URL,
        headers: Sequence[tuple[bytes, bytes]],
        content: AsyncIterable[bytes] | None,
        extensions: dict[str, Any],
    ) -> H1Answer:
        """Send one request as given (no header is added) and return the answer's start.

        Raises:
            httpx.HTTPError: the request failed; reading the body raises them too.
        """
        timeout: dict[str, float | None] = extensions.get("timeout", {})
        head = _request_head(method, url.target, headers)
        chunked = content is not None and any(
            name.lower() == b"transfer-encoding" for name, _ in headers)
        declared = _declared_length(headers)
        if chunked and declared is not None:  # two framings: the upstream may read either
            raise httpx.LocalProtocolError("a body with both Content-Length and chunked framing")
        if content is not None and not chunked and declared is None:  # no framing: the upstream
            # would read the body as the start of a request of its own
            raise httpx.LocalProtocolError("a body with neither Content-Length nor chunked framing")
        conn = await self._acquire(url.host.decode("ascii"), url.port or 80, timeout)
        try:
            conn.begin(method == b"HEAD", content is not None)
            conn.write(head)
            if content is not None:
                await self._send_body(conn, content, chunked, timeout.get("write"), declared)
            read = timeout.get("read")
            while not conn.started:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(read)
        except BaseException:
            self.release(conn, False)
            raise
        return H1Answer(conn.status, conn.headers, H1Body(self, conn, read))

    @staticmethod
    async def _send_body(conn: _Conn, content: AsyncIterable[bytes], chunked: bool,
                         timeout: float | None,  # noqa: ASYNC109
                         declared: int | None = None) -> None:
        """Write the body; with ``declared`` (its Content-Length) never a byte more or fewer.

        Raises:
            httpx.LocalProtocolError: the body does not match its Content-Length (what
                passed it would reach the upstream as the start of another request).
        """
        left = declared
        try:
            async for chunk in content:
                if chunk:
                    if left is not None:
                        left -= len(chunk)
                        if left < 0:
                            raise httpx.LocalProtocolError("the body is longer than its "
                                                           "Content-Length")
                    conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await conn.drain(timeout)
            if left:
                raise httpx.LocalProtocolError("the body is shorter than its Content-Length")
            if chunked:
                conn.write(b"0\r\n\r\n")
            conn.unsent = False
        except httpx.WriteError:
            if conn.error is None and not conn.started:
                raise
            # The server answered (or failed) before taking the whole body: its answer counts.

    async def _acquire(self, host: str, port: int,
                       timeouts: dict[str, float | None]) -> _Conn:
        if self._closed:
            raise httpx.PoolTimeout("the transport is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < self._expiry and not conn.stale():
                return conn
            self._open -= 1
            conn.close()
        while self._open >= self._max:
            waiter = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                await _wait(asyncio.get_running_loop(), waiter, timeouts.get("pool"),
                            httpx.PoolTimeout)
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._next()  # woken, then cancelled: the free slot goes to the next one
                raise
            finally:
                if waiter in self._queue:
                    self._queue.remove(waiter)
            if self._idle:
                return await self._acquire(host, port, timeouts)
        self._open += 1
        try:
            return await _connect(host, port, timeouts.get("connect"), self._tls)
        except BaseException:
            self._open -= 1
            self._next()
            raise

    def release(self, conn: _Conn, reusable: bool) -> None:
        """Give ``conn`` back: kept alive when ``reusable``, else closed."""
        if reusable and not conn.broken and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._open -= 1
            conn.close()
        self._next()

    def _next(self) -> None:
        while self._queue:
            waiter = self._queue.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()


async def _connect(host: str, port: int, timeout: float | None,  # noqa: ASYNC109
                   tls: ssl.SSLContext | None) -> _Conn:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: _Conn(loop), host, port, ssl=tls,
                server_hostname=host if tls is not None else None)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    return conn


def _declared_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length (None: none); one that is not a single number is refused.

    Raises:
        httpx.LocalProtocolError: several lengths, or one that is not digits.
    """
    lengths = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not lengths:
        return None
    length = lengths.pop()
    if lengths or not length.isdigit():
        raise httpx.LocalProtocolError("a Content-Length no HTTP/1.1 request may carry")
    return int(length)


def _request_head(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The request line and header block; a name, value or target that could split it is refused.

    Raises:
        httpx.LocalProtocolError: a character no HTTP/1.1 field or target may hold.
    """
    names = b"\n".join(name for name, _ in headers)
    values = b"".join(value for _, value in headers)
    # one "\n" per join: a name holding "\n" would otherwise pass as two names
    split = bool(headers) and (not _NAMES.fullmatch(names)
                               or names.count(b"\n") != len(headers) - 1)
    if split or _BAD_VALUE.search(values) or (
            _BAD_TARGET.search(target) or not _TOKEN.fullmatch(method)):
        raise httpx.LocalProtocolError("a header, method or target no HTTP/1.1 request may carry")
    lines = [b"%b %b HTTP/1.1" % (method, target)]
    lines.extend(b"%b: %b" % pair for pair in headers)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
