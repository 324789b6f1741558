"""A plain-TCP network backend for httpcore on the running asyncio loop.

httpcore's default backend under asyncio goes through anyio's socket streams:
a cancel scope for every read and write, and a dictionary of socket attributes
built for every keep-alive check. This one is an :class:`asyncio.Protocol`
that buffers what the socket delivers until httpcore reads it, with the same
per-call timeouts, error types and flow control (reading pauses while too much
is buffered, writing waits while the socket's buffer is full).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any, cast

import httpcore

HIGH_WATER = 256 * 1024
"""Stop reading from the socket while this many bytes wait for httpcore ..."""
LOW_WATER = 64 * 1024
"""... and read again once fewer than this many do."""


class _Stream(asyncio.Protocol, httpcore.AsyncNetworkStream):
    """One connection: the socket's bytes wait in ``_chunks`` until :meth:`read`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: Exception | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._reader: asyncio.Future[None] | None = None  # a read waiting for bytes
        self._writer: asyncio.Future[None] | None = None  # a write waiting for room

    # -- asyncio.Protocol: called by the loop -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = self._error or exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _wake_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.set_result(None)

    # -- httpcore.AsyncNetworkStream ------------------------------------------------------------

    # httpcore's interface passes each call's timeout (hence the noqa: ASYNC109).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if not self._size and not self._eof:
            self._reader = self._loop.create_future()
            await _wait(self._loop, self._reader, timeout, httpcore.ReadTimeout)
        if not self._size:
            if self._error is not None:
                raise httpcore.ReadError(str(self._error) or type(self._error).__name__)
            return b""  # the peer closed the connection
        chunks = self._chunks
        if len(chunks) == 1 and len(chunks[0]) <= max_bytes:
            data = chunks.pop()
        else:
            joined = b"".join(chunks)
            data, rest = joined[:max_bytes], joined[max_bytes:]
            chunks[:] = [rest] if rest else []
        self._size -= len(data)
        if self._reading_paused and self._size < LOW_WATER and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        transport = self._transport
        if transport is None or transport.is_closing() or self._error is not None:
            raise httpcore.WriteError("the connection is closed")
        transport.write(buffer)
        if self._writing_paused:
            self._writer = self._loop.create_future()
            await _wait(self._loop, self._writer, timeout, httpcore.WriteTimeout)
            if transport.is_closing():
                raise httpcore.WriteError("the connection closed while writing")

    async def aclose(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("this backend speaks plain TCP only")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle keep-alive connection the server closed or wrote on
            return self._size > 0 or self._eof
        transport = self._transport
        if transport is None:
            return None
        names = {"socket": "socket", "client_addr": "sockname", "server_addr": "peername"}
        return transport.get_extra_info(names[info]) if info in names else None


async def _wait(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None],
    seconds: float | None,
    error: type[httpcore.TimeoutException],
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


def _expire(future: asyncio.Future[None], error: type[httpcore.TimeoutException]) -> None:
    if not future.done():
        future.set_exception(error("timed out"))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Plain TCP connections as :class:`asyncio.Protocol` streams (no Unix sockets, no TLS)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                _, stream = await loop.create_connection(
                    lambda: _Stream(loop), host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = stream.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
