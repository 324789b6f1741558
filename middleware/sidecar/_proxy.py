"""Forward an allowed request to the upstream with httpx, streaming both bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import httpx
from starlette.types import Receive, Scope, Send

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
GUARD_HEADER_PREFIX = "x-guard-"


class UpstreamError(Exception):
    """The upstream could not be reached or failed before it answered."""


_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
# Host: httpx sets the upstream's. Expect: the server already answered
# ``100 Continue`` to the client; the body is sent upstream as it arrives.
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"expect"}
_GUARD_PREFIX = GUARD_HEADER_PREFIX.encode()


def _connection_tokens(value: bytes) -> set[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop."""
    return {tok.strip().lower() for tok in value.split(b",") if tok.strip()}


def request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    strip: frozenset[bytes],
    add: Mapping[str, str],
    peer: str | None,
) -> list[tuple[bytes, bytes]]:
    """Headers for the upstream request.

    Drops hop-by-hop headers (and those the ``Connection`` header names), ``Host``,
    ``Expect``, any caller-supplied ``x-guard-*`` header and the names in ``strip``;
    then adds the guard's own headers and extends ``X-Forwarded-For``.
    """
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    forwarded_for = b""
    host = b""
    for name, value in raw:
        low = name.lower()
        if low in _NOT_FORWARDED:
            if low == b"host":
                host = value
            elif low == b"connection":
                named |= _connection_tokens(value)
        elif low == b"x-forwarded-for":
            forwarded_for = value
        elif low not in strip and not low.startswith(_GUARD_PREFIX):
            out.append((low, value))
    if named:
        out = [(name, value) for name, value in out if name not in named]
    if peer:
        forwarded_for = forwarded_for + b", " + peer.encode() if forwarded_for else peer.encode()
    if forwarded_for:
        out.append((b"x-forwarded-for", forwarded_for))
    if host:
        out.append((b"x-forwarded-host", host))
    out.extend((k.encode(), v.encode("latin-1")) for k, v in add.items())
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers without hop-by-hop ones."""
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    for name, value in raw:
        low = name.lower()
        if low in _HOP_BY_HOP:
            if low == b"connection":
                named |= _connection_tokens(value)
        else:
            out.append((low, value))
    return [(name, value) for name, value in out if name not in named] if named else out


class Proxy:
    """Forwards requests to one upstream over a pooled httpx transport.

    The transport is used without :class:`httpx.AsyncClient` on purpose: a
    client keeps a cookie jar, and a proxy must never replay one caller's
    cookies on another caller's request (it also saves the client's per-request
    work: auth, redirects, cookies, URL merging).

    Args:
        transport: The shared transport (its connection pool is reused).
        upstream: Base URL of the guarded service, e.g. ``http://127.0.0.1:9000``.
        timeout_seconds: Connect, read, write and pool timeout for each request.
        strip: Extra request header names (lower-case) never forwarded, e.g.
            the trusted-proxy caller header.
    """

    __slots__ = ("_base", "_prefix", "_strip", "_timeout", "_transport")

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        upstream: str,
        *,
        timeout_seconds: float = 30.0,
        strip: Iterable[str] = (),
    ) -> None:
        self._transport = transport
        self._base = httpx.URL(upstream.rstrip("/"))
        self._prefix = self._base.raw_path.rstrip(b"/")
        self._timeout = httpx.Timeout(timeout_seconds).as_dict()
        self._strip = frozenset(name.lower().encode() for name in strip)

    def _url(self, scope: Scope) -> httpx.URL:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = self._prefix + raw_path.split(b"?", 1)[0]
        query: bytes = scope["query_string"]
        return self._base.copy_with(raw_path=path + (b"?" + query if query else b""))

    async def forward(
        self, scope: Scope, receive: Receive, send: Send, *, add: Mapping[str, str]
    ) -> int:
        """Send the request upstream and stream the answer back; return the status sent.

        Raises:
            UpstreamError: Nothing was sent to the client yet; answer with a 502.
        """
        client_addr = scope.get("client")
        headers = request_headers(
            scope["headers"],
            strip=self._strip,
            add=add,
            peer=client_addr[0] if client_addr else None,
        )
        has_body = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"]
        )
        request = httpx.Request(
            scope["method"],
            self._url(scope),
            headers=headers,
            content=_body(receive) if has_body else None,
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._transport.handle_async_request(request)
        except UpstreamError:
            raise
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc
        try:
            raw = response.headers.raw
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(raw),
                }
            )
            # With a Content-Length, the chunk that completes it is sent as the last one
            # (one message fewer); otherwise an empty last message ends the body.
            remaining = _content_length(raw)
            done = False
            async for chunk in response.aiter_raw():
                if chunk:
                    if remaining is not None:
                        remaining -= len(chunk)
                        done = remaining == 0
                    await send({"type": "http.response.body", "body": chunk, "more_body": not done})
            if not done:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        return response.status_code


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The response's Content-Length when it frames the body (not chunked), else None."""
    length: int | None = None
    for name, value in headers:
        low = name.lower()
        if low == b"transfer-encoding":
            return None
        if low == b"content-length":
            if not value.isdigit():
                return None
            length = int(value)
    return length


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The client's request body, chunk by chunk as the server hands it over."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise UpstreamError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
