"""The sidecar's httpcore transport (``https://`` upstreams), against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from upstreamkit import OK, Handler, answer_each, serve

from middleware.sidecar._transport import UpstreamTransport

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def serve_url(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """:func:`upstreamkit.serve` with the upstream's base URL in place of its port."""
    async with serve(handler) as (port, accepted):
        yield f"http://127.0.0.1:{port}", accepted


async def get(transport: UpstreamTransport, url: str, seconds: float = 5.0) -> bytes:
    request = httpx.Request("GET", url, extensions={"timeout": httpx.Timeout(seconds).as_dict()})
    response = await transport.handle_async_request(request)
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


async def test_requests_reuse_one_kept_alive_connection() -> None:
    async with serve_url(answer_each) as (url, accepted):
        transport = UpstreamTransport("http", max_connections=4)
        try:
            assert [await get(transport, url + "/a") for _ in range(5)] == [b"ok"] * 5
        finally:
            await transport.aclose()
    assert len(accepted) == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()  # then close: the pooled connection is now dead

    async with serve_url(one_answer) as (url, accepted):
        transport = UpstreamTransport("http", max_connections=4)
        try:
            assert await get(transport, url) == b"ok"
            await asyncio.sleep(0.05)  # let the FIN arrive
            assert await get(transport, url) == b"ok"
        finally:
            await transport.aclose()
    assert len(accepted) == 2


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_refused_connection_is_an_httpx_connect_error(scheme: str) -> None:
    async with serve_url(answer_each) as (url, _):
        pass  # closed: nothing listens on that port any more
    transport = UpstreamTransport(scheme, max_connections=1)
    try:
        with pytest.raises(httpx.ConnectError):
            await get(transport, url.replace("http", scheme, 1))
    finally:
        await transport.aclose()


async def test_silent_upstream_is_an_httpx_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async with serve_url(silent) as (url, _):
        transport = UpstreamTransport("http", max_connections=1)
        try:
            with pytest.raises(httpx.ReadTimeout):
                await get(transport, url, seconds=0.2)
        finally:
            await transport.aclose()


async def test_body_cut_short_is_an_httpx_error_while_streaming() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async with serve_url(short) as (url, _):
        transport = UpstreamTransport("http", max_connections=1)
        try:
            with pytest.raises(httpx.RemoteProtocolError):
                await get(transport, url)
        finally:
            await transport.aclose()


async def test_upstream_that_stops_reading_the_body_is_a_write_timeout() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def endless() -> AsyncIterator[bytes]:
        chunk = b"x" * 65536
        while True:
            yield chunk

    async with serve_url(never_reads) as (url, _):
        transport = UpstreamTransport("http", max_connections=1)
        request = httpx.Request(
            "PUT", url, content=endless(), extensions={"timeout": httpx.Timeout(0.3).as_dict()}
        )
        try:
            with pytest.raises(httpx.WriteTimeout):
                await transport.handle_async_request(request)
        finally:
            await transport.aclose()
