"""The transports the sidecar forwards with: httptools for ``http://``, httpcore for TLS."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, NamedTuple

import httpcore
import httpx

from middleware.sidecar._h1 import H1Transport


def _httpx_error(exc: Exception) -> httpx.HTTPError:
    """The httpx exception of the same name (httpcore's are a subset of httpx's)."""
    for cls in type(exc).__mro__:
        mapped = getattr(httpx, cls.__name__, None)
        if isinstance(mapped, type) and issubclass(mapped, httpx.HTTPError):
            return mapped(str(exc))
    return httpx.TransportError(str(exc))


_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
           httpcore.UnsupportedProtocol, httpcore.ProxyError)


class _Body(httpx.AsyncByteStream):
    """A response body from the pool, with httpcore's errors turned into httpx's."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except _ERRORS as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class Answer(NamedTuple):
    """The upstream's answer: status, raw headers, and its body still to read."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: _Body


class UpstreamTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 to one upstream over httpcore's pool of kept-alive connections.

    Like :class:`httpx.AsyncHTTPTransport` without proxies or environment
    settings. The sidecar uses it for ``https://`` upstreams (TLS); a plain
    ``http://`` one goes through :class:`middleware.sidecar._h1.H1Transport`
    (see :func:`upstream_transport`).

    Args:
        scheme: The upstream's scheme, ``http`` or ``https``.
        max_connections: Most connections open at once (all may be kept alive).
        keepalive_expiry: Seconds an idle connection is kept.
    """

    def __init__(self, scheme: str, *, max_connections: int, keepalive_expiry: float = 5.0) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=None if scheme == "http" else httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )

    async def send(
        self,
        method: bytes,
        url: httpcore.URL,
        headers: Sequence[tuple[bytes, bytes]],
        content: AsyncIterable[bytes] | None,
        extensions: dict[str, Any],
    ) -> Answer:
        """Send one request as given (no header is added) and return the answer's start.

        The proxy's path: no ``httpx.Request`` or ``httpx.Response`` is built.

        Raises:
            httpx.HTTPError: the request failed (httpcore's error as httpx's); reading
                the body raises them too.
        """
        core = httpcore.Request(method=method, url=url, headers=headers,
                                content=content if content is not None else b"",
                                extensions=extensions)
        try:
            answer = await self._pool.handle_async_request(core)
        except _ERRORS as exc:
            raise _httpx_error(exc) from exc
        assert isinstance(answer.stream, AsyncIterable)
        return Answer(answer.status, answer.headers, _Body(answer.stream))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=stream,
            extensions=request.extensions,
        )
        try:
            answer = await self._pool.handle_async_request(core)
        except _ERRORS as exc:
            raise _httpx_error(exc) from exc
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


Forwarder = UpstreamTransport | H1Transport
"""What :class:`middleware.sidecar._proxy.Proxy` sends with (the same ``send`` and ``aclose``)."""


def upstream_transport(scheme: str, *, max_connections: int) -> Forwarder:
    """The transport for an upstream: httptools over asyncio for ``http``, httpcore for ``https``.

    Args:
        scheme: The upstream's scheme.
        max_connections: Most connections open at once (all may be kept alive).
    """
    if scheme == "http":
        return H1Transport(max_connections=max_connections)
    return UpstreamTransport(scheme, max_connections=max_connections)
