"""The httptools transport for ``http://`` upstreams, against real loopback servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from upstreamkit import OK, answer_each, serve

from middleware.sidecar._h1 import HIGH_WATER, H1Answer, H1Transport, _Conn
from middleware.sidecar._transport import upstream_transport

pytestmark = pytest.mark.anyio

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _timeouts(seconds: float) -> dict[str, object]:
    return {"timeout": httpx.Timeout(seconds).as_dict()}


async def send(
    transport: H1Transport,
    port: int,
    method: bytes = b"GET",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: AsyncIterator[bytes] | None = None,
    seconds: float = 5.0,
    target: bytes = b"/a",
) -> H1Answer:
    url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=port, target=target)
    return await transport.send(method, url, [(b"host", b"up"), *(headers or [])], body,
                                _timeouts(seconds))


async def read(answer: H1Answer) -> bytes:
    try:
        return b"".join([chunk async for chunk in answer.body])
    finally:
        await answer.body.aclose()


async def test_both_schemes_get_the_httptools_transport_with_tls_for_https() -> None:
    plain = upstream_transport("http", max_connections=1)
    tls = upstream_transport("https", max_connections=1)
    assert isinstance(plain, H1Transport)
    assert isinstance(tls, H1Transport)
    assert plain._tls is None
    assert tls._tls is not None
    assert tls._tls.verify_mode == ssl.CERT_REQUIRED
    assert tls._tls.check_hostname


async def test_an_https_upstream_that_is_not_trusted_is_an_httpx_connect_error() -> None:
    """A plain-TCP server (no certificate at all) behind an ``https://`` URL: refused."""

    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)  # an answer where the TLS handshake should be
        await writer.drain()
        await reader.read()

    async with serve(plain) as (port, _):
        transport = upstream_transport("https", max_connections=1)
        url = httpcore.URL(scheme=b"https", host=b"127.0.0.1", port=port, target=b"/a")
        with pytest.raises(httpx.ConnectError):
            await transport.send(b"GET", url, [(b"host", b"up")], None, _timeouts(5))
        await transport.aclose()


async def test_requests_reuse_one_kept_alive_connection() -> None:
    async with serve(answer_each) as (port, accepted):
        transport = H1Transport(max_connections=4)
        try:
            for _ in range(5):
                answer = await send(transport, port)
                assert (answer.status, await read(answer)) == (200, b"ok")
        finally:
            await transport.aclose()
    assert len(accepted) == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()  # then close: the pooled connection is now dead

    async with serve(one_answer) as (port, accepted):
        transport = H1Transport(max_connections=4)
        try:
            assert await read(await send(transport, port)) == b"ok"
            await asyncio.sleep(0.05)  # let the FIN arrive
            assert await read(await send(transport, port)) == b"ok"
        finally:
            await transport.aclose()
    assert len(accepted) == 2


async def test_a_connection_that_spoke_while_idle_is_not_reused() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK + b"HTTP/1.1 200 OK\r\n")  # bytes past the answer
            await writer.drain()

    async with serve(chatty) as (port, accepted):
        transport = H1Transport(max_connections=4)
        try:
            assert await read(await send(transport, port)) == b"ok"
            await asyncio.sleep(0.05)
            assert await read(await send(transport, port)) == b"ok"
        finally:
            await transport.aclose()
    assert len(accepted) == 2


async def test_refused_connection_is_an_httpx_connect_error() -> None:
    async with serve(answer_each) as (port, _):
        pass  # closed: nothing listens on that port any more
    transport = H1Transport(max_connections=1)
    with pytest.raises(httpx.ConnectError):
        await send(transport, port)
    transport2 = H1Transport(max_connections=1)  # the failed connect gave its slot back
    async with serve(answer_each) as (port2, _):
        assert await read(await send(transport2, port2)) == b"ok"
        assert await read(await send(transport, port2)) == b"ok"


async def test_silent_upstream_is_an_httpx_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async with serve(silent) as (port, _):
        transport = H1Transport(max_connections=1)
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, port, seconds=0.2)


async def test_a_body_that_stops_is_a_read_timeout_while_streaming() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123")
        await writer.drain()
        await asyncio.sleep(5)

    async with serve(stalls) as (port, _):
        transport = H1Transport(max_connections=1)
        answer = await send(transport, port, seconds=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await read(answer)


async def test_body_cut_short_is_an_httpx_error_while_streaming() -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    async with serve(short) as (port, _):
        transport = H1Transport(max_connections=1)
        answer = await send(transport, port)
        with pytest.raises(httpx.RemoteProtocolError):
            await read(answer)


async def test_no_answer_at_all_is_a_remote_protocol_error() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with serve(hangs_up) as (port, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await send(H1Transport(max_connections=1), port)


async def test_a_malformed_answer_is_a_remote_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with serve(garbage) as (port, _):
        with pytest.raises(httpx.RemoteProtocolError):
            await send(H1Transport(max_connections=1), port)


async def test_upstream_that_stops_reading_the_body_is_a_write_timeout() -> None:
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def endless() -> AsyncIterator[bytes]:
        chunk = b"x" * 65536
        while True:
            yield chunk

    async with serve(never_reads) as (port, _):
        transport = H1Transport(max_connections=1)
        with pytest.raises(httpx.WriteTimeout):
            await send(transport, port, b"PUT", body=endless(), seconds=0.3,
                       headers=[(b"transfer-encoding", b"chunked")])


async def test_request_bodies_go_up_chunked_or_as_declared() -> None:
    got: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"transfer-encoding: chunked" in head:
                body = b""
                while (size := int((await reader.readuntil(b"\r\n"))[:-2], 16)):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readexactly(2)
            else:
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
            got.append(head.split(b"\r\n")[0])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"ab", b"", b"cde", b"f" * 70000):
            yield part

    async with serve(echo) as (port, accepted):
        transport = H1Transport(max_connections=1)
        chunked = await send(transport, port, b"POST", body=parts(), target=b"/u?x=1",
                             headers=[(b"transfer-encoding", b"chunked")])
        assert await read(chunked) == b"abcde" + b"f" * 70000
        declared = await send(transport, port, b"PUT", body=parts(),
                              headers=[(b"content-length", b"70005")])
        assert await read(declared) == b"abcde" + b"f" * 70000
    assert got == [b"POST /u?x=1 HTTP/1.1", b"PUT /a HTTP/1.1"]
    assert len(accepted) == 1


@pytest.mark.parametrize(
    ("method", "answer", "body", "reused"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"", True),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n", b"ok!!!", True),
        (b"GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok",
         False),
    ],
)
async def test_framing_of_answers(method: bytes, answer: bytes, body: bytes, reused: bool) -> None:
    async def scripted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await answer_each(reader, writer)

    async with serve(scripted) as (port, accepted):
        transport = H1Transport(max_connections=1)
        first = await send(transport, port, method)
        assert first.status in (200, 204)
        assert b"Link" not in b"".join(name for name, _ in first.headers)
        assert await read(first) == body
        assert await read(await send(transport, port)) == b"ok"
    assert len(accepted) == (1 if reused else 2)


async def test_a_body_framed_by_the_end_of_the_connection_is_whole() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await writer.drain()

    async with serve(until_close) as (port, _):
        assert await read(await send(H1Transport(max_connections=1), port)) == b"all of it"


async def test_a_header_that_could_split_the_request_is_refused() -> None:
    async with serve(answer_each) as (port, accepted):
        transport = H1Transport(max_connections=1)
        for bad in ([(b"x-a", b"1\r\nx-b: 2")], [(b"x a", b"1")], [(b"x-a\n", b"1")]):
            with pytest.raises(httpx.LocalProtocolError):
                await send(transport, port, headers=bad)
        with pytest.raises(httpx.LocalProtocolError):
            await send(transport, port, target=b"/a HTTP/1.1\r\nx: y")
        assert await read(await send(transport, port)) == b"ok"  # the pool is intact
    assert len(accepted) == 1  # nothing refused was sent


async def test_a_request_waits_for_a_free_connection_within_the_pool_timeout() -> None:
    async with serve(answer_each) as (port, accepted):
        transport = H1Transport(max_connections=1)
        held = await send(transport, port)
        with pytest.raises(httpx.PoolTimeout):
            await send(transport, port, seconds=0.2)
        waiting = asyncio.ensure_future(send(transport, port))
        await asyncio.sleep(0.05)
        assert await read(held) == b"ok"
        assert await read(await waiting) == b"ok"
    assert len(accepted) == 1


async def test_reading_pauses_while_the_consumer_lags_and_nothing_is_lost() -> None:
    size = 8 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + data)
        await writer.drain()

    async with serve(flood) as (port, _):
        answer = await send(H1Transport(max_connections=1), port)
        received: list[bytes] = []
        async for chunk in answer.body:
            if not received:
                await asyncio.sleep(0.2)  # the server keeps sending; the connection stops reading
                conn = answer.body._conn  # type: ignore[attr-defined]
                assert conn.size <= HIGH_WATER + 256 * 1024  # one socket read past the mark
            received.append(chunk)
        await answer.body.aclose()
    assert b"".join(received) == data


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=120), max_size=12),
       chunked=st.booleans())
def test_an_answer_parses_the_same_however_the_socket_splits_it(
        cuts: list[int], chunked: bool) -> None:
    body = b"0123456789" * 7
    if chunked:
        wire = (b"HTTP/1.1 201 Created\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"1e\r\n" + body[:30] + b"\r\n28\r\n" + body[30:] + b"\r\n0\r\n\r\n")
    else:
        wire = b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 70\r\n\r\n" + body
    conn = _Conn(asyncio.new_event_loop())
    conn.begin(head=False)
    at = 0
    for cut in [*cuts, len(wire)]:
        conn.data_received(wire[at:at + cut])
        at += cut
        if at >= len(wire):
            break
    assert (conn.status, conn.complete, conn.reusable, conn.error) == (201, True, True, None)
    assert conn.headers[0] == (b"X-A", b"1")
    assert conn.take() == body


async def test_endless_headers_are_refused_not_buffered() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(100):
            writer.write(b"a" * 4096)
            await writer.drain()

    async with serve(endless) as (port, _):
        with pytest.raises(httpx.RemoteProtocolError, match="too large"):
            await send(H1Transport(max_connections=1), port)
