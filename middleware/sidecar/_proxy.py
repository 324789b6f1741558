"""Forward an allowed request to the upstream, streaming both bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

import httpcore
import httpx
from starlette.types import Receive, Scope, Send

from middleware._private import private_answer
from middleware.sidecar._transport import Forwarder

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

# Headers a common server, framework or auth proxy reads as who is calling, from
# where, for what purpose, or which route and method were meant. A client's
# copies never reach the upstream; the sidecar sets its own. Names are compared
# lower-case with ``_`` read as ``-`` (a WSGI server maps both to one variable).
IDENTITY_HEADERS = frozenset(
    {
        # caller and purpose
        "x-caller",
        "x-purpose",
        "x-user",
        "x-user-id",
        "x-userid",
        "x-username",
        "x-email",
        "x-auth-user",
        "x-authenticated-user",
        "x-authenticated-userid",
        "x-authenticated-scope",
        "x-proxy-user",
        "x-client-id",
        "x-consumer-id",
        "x-consumer-custom-id",
        "x-consumer-username",
        "x-consumer-groups",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-userinfo",
        "x-jwt-payload",
        "x-jwt-assertion",
        "x-client-cert",
        "x-arr-clientcert",
        "x-client-dn",
        "x-client-verify",
        "ssl-client-cert",
        "x-ms-client-principal",
        "x-ms-client-principal-id",
        "x-ms-client-principal-name",
        "x-ms-client-principal-idp",
        "x-goog-iap-jwt-assertion",
        "gap-auth",  # oauth2-proxy's user
        "teleport-jwt-assertion",
        "client-cert",  # RFC 9440: a TLS-terminating proxy's client certificate
        "client-cert-chain",
        "x-ssl-cert",  # nginx's usual name for $ssl_client_escaped_cert
        "x-endpoint-api-userinfo",  # Google Cloud Endpoints: the verified token's claims
        # where from (the sidecar sets x-forwarded-for, -host and -proto itself)
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",  # Cloudflare's Pseudo IPv4: the client's own IPv6 address
        "fastly-client-ip",
        "fly-client-ip",  # Fly.io's proxy
        "x-azure-clientip",  # Azure Front Door
        "x-azure-socketip",
        # which route and method (a rewrite or override the guard did not judge)
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
IDENTITY_PREFIXES = (
    GUARD_HEADER_PREFIX,
    "x-forwarded-",
    "x-original-",  # a rewrite's original host, scheme, address, target or method
    "x-auth-request-",
    "x-ssl-client-",
    "x-amzn-oidc-",
    "x-amzn-mtls-",  # AWS ALB mutual TLS
    "x-goog-authenticated-user-",
    "cf-access-",  # Cloudflare Access (its service tokens among them)
    "x-remote-",  # Kubernetes' authenticating proxy: -user, -group, -extra-*
    "remote-",  # Authelia: remote-user, -groups, -email, -name
    "x-pomerium-",
    "x-authentik-",
    "x-webauth-",  # Grafana's auth proxy
    "x-vouch-",
    "x-envoy-",  # Envoy's trusted address and internal flags, original path
    "ssl-client-",  # ingress-nginx's client certificate (-verify, -subject-dn); Apache's
    "x-consumer-",  # Kong
    "x-authenticated-",  # Kong: -userid, -scope, -groups
    "x-ms-token-",  # Azure App Service authentication's tokens
    "x-appengine-user-",
    "tailscale-user-",
    "impersonate-",  # Kubernetes: act as another user, group or extra
    "l5d-",  # Linkerd: l5d-client-id (the mesh's proven client), l5d-dst-override (routing)
    "x-apigateway-",  # Google API Gateway's -api-userinfo; AWS Lambda adapters' -event, -context
    "oidc-",  # Apache mod_auth_openidc: OIDC_CLAIM_<claim>, OIDC_access_token, OIDC_userinfo_json
    "mellon-",  # Apache mod_auth_mellon: MELLON_<attribute>
    "shib-",  # Shibboleth: Shib-Identity-Provider, Shib-Session-ID, ...
)


class UpstreamError(Exception):
    """The upstream could not be reached or failed before it answered."""


class UpstreamAbortedError(Exception):
    """The upstream failed after its answer started; the client's response is cut short.

    Args:
        status: The status already sent to the client.
        cause: What failed, e.g. ``RemoteProtocolError``.
    """

    def __init__(self, status: int, cause: str) -> None:
        super().__init__(f"{cause} after status {status}")
        self.status = status
        self.cause = cause


class ClientGoneError(Exception):
    """The client went away while its answer streamed; the upstream's answer was dropped.

    Args:
        status: The status already sent to the client.
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"the client left after status {status}")
        self.status = status


_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
# Host: httpx sets the upstream's. Expect: the server already answered
# ``100 Continue`` to the client; the body is sent upstream as it arrives.
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"expect"}
# The body's framing: never dropped for a ``Connection`` header naming it. Forwarded without
# its length, a body would reach the upstream as the start of a request of its own.
_FRAMING = frozenset({b"content-length"})
_IDENTITY = frozenset(name.encode() for name in IDENTITY_HEADERS)
_IDENTITY_PREFIXES = tuple(prefix.encode() for prefix in IDENTITY_PREFIXES)


def fold(name: bytes) -> bytes:
    """A header name as servers may read it: lower-case, ``_`` read as ``-``."""
    return name.lower().replace(b"_", b"-")  # no copy when there is no "_"


def _connection_tokens(value: bytes) -> set[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop (folded), but the body's
    framing (:data:`_FRAMING`), which belongs to the message, not to the connection."""
    return {fold(tok.strip()) for tok in value.split(b",") if tok.strip()} - _FRAMING


def request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    strip: frozenset[bytes],
    add: Mapping[str, str],
    peer: str | None,
    scheme: str = "http",
) -> list[tuple[bytes, bytes]]:
    """Headers for the upstream request.

    Drops hop-by-hop headers (and those the ``Connection`` header names, never the
    body's ``Content-Length``), ``Host``,
    ``Expect``, every identity, address and rewrite header a client could forge
    (:data:`IDENTITY_HEADERS`, :data:`IDENTITY_PREFIXES` and the names in
    ``strip``, in any case and with ``_`` for ``-``); then sets
    ``X-Forwarded-For`` (the peer), ``X-Forwarded-Host`` and ``X-Forwarded-Proto``
    and adds the guard's own headers.

    Args:
        raw: The client's request headers.
        strip: Further folded names never forwarded (the configured caller and
            purpose headers).
        add: The guard's headers: the proven caller, the judged purpose, the decision id.
        peer: The client's address as the sidecar's server saw it.
        scheme: The scheme the client used to reach the sidecar.
    """
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    host = b""
    for name, value in raw:
        low = fold(name)
        if low in _NOT_FORWARDED:
            if low == b"host":
                host = value
            elif low == b"connection":
                named |= _connection_tokens(value)
        elif not (low in _IDENTITY or low in strip or low.startswith(_IDENTITY_PREFIXES)):
            out.append((name.lower(), value))
    if named:
        out = [(name, value) for name, value in out if fold(name) not in named]
    if peer:
        out.append((b"x-forwarded-for", peer.encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-forwarded-proto", scheme.encode()))
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
    """Forwards requests to one upstream over a pooled transport.

    No client with a cookie jar is involved on purpose: a proxy must never replay
    one caller's cookies on another caller's request. The request goes to the
    transport's pool as it is (no ``httpx.Request``, ``httpx.URL`` or
    ``httpx.Response`` is built): the proxy sets ``Host`` and the body's framing
    itself, as httpx would.

    Args:
        transport: The shared transport (its connection pool is reused).
        upstream: Base URL of the guarded service, e.g. ``http://127.0.0.1:9000``.
        timeout_seconds: Connect, read, write and pool timeout for each request.
        strip: Further request header names never forwarded besides
            :data:`IDENTITY_HEADERS`, e.g. the configured caller and purpose headers
            (compared lower-case with ``_`` read as ``-``).
    """

    __slots__ = ("_extensions", "_host", "_origin", "_prefix", "_strip", "_transport")

    def __init__(
        self,
        transport: Forwarder,
        upstream: str,
        *,
        timeout_seconds: float = 30.0,
        strip: Iterable[str] = (),
    ) -> None:
        self._transport = transport
        base = httpx.URL(upstream.rstrip("/"))
        self._origin = (base.raw_scheme, base.raw_host, base.port)
        self._host = (b"host", base.netloc)
        self._prefix = base.raw_path.rstrip(b"/")
        self._extensions = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
        self._strip = frozenset(fold(name.encode()) for name in strip)

    def _target(self, scope: Scope) -> httpcore.URL:
        """The upstream URL: its origin, its path prefix, the client's raw path and query."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = self._prefix + raw_path.split(b"?", 1)[0]
        query: bytes = scope["query_string"]
        scheme, host, port = self._origin
        return httpcore.URL(scheme=scheme, host=host, port=port,
                            target=path + b"?" + query if query else path)

    async def forward(
        self, scope: Scope, receive: Receive, send: Send, *, add: Mapping[str, str],
        private: bool = False,
    ) -> int:
        """Send the request upstream and stream the answer back; return the status sent.

        ``private``: the request was judged for its caller (not a public route), so no
        shared cache may keep the answer (:func:`private_answer`).

        Raises:
            UpstreamError: Nothing was sent to the client yet; answer with a 502.
            UpstreamAbortedError: The upstream failed mid-body; the client's answer is cut
                short (re-raise it so the server drops the connection).
        """
        client_addr = scope.get("client")
        headers = request_headers(
            scope["headers"],
            strip=self._strip,
            add=add,
            peer=client_addr[0] if client_addr else None,
            scheme=scope.get("scheme", "http"),
        )
        headers.insert(0, self._host)
        framed = has_body = False
        for name, _ in scope["headers"]:
            low = name.lower()
            if low == b"content-length":
                framed = has_body = True
            elif low == b"transfer-encoding":
                has_body = True
        method: str = scope["method"]
        if has_body and not framed:  # the client's chunked body goes upstream chunked
            headers.append((b"transfer-encoding", b"chunked"))
        elif not has_body and method in ("POST", "PUT", "PATCH"):
            headers.append((b"content-length", b"0"))
        try:
            response = await self._transport.send(
                method.encode(), self._target(scope), headers,
                _body(receive) if has_body else None, self._extensions)
        except UpstreamError:
            raise
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ) from exc
        try:
            raw = response.headers
            status = response.status
            answer = response_headers(raw)
            await send({"type": "http.response.start", "status": status,
                        "headers": private_answer(answer) if private else answer})
            # With a Content-Length, the chunk that completes it is sent as the last one
            # (one message fewer); otherwise an empty last message ends the body.
            remaining = _content_length(raw)
            done = False
            # A body that streams on past its first part is read only while the client is
            # there: a server's ``send`` may return quietly once it left (uvicorn's does).
            parts = 0
            gone: asyncio.Future[None] | None = None
            try:
                async for chunk in response.body:
                    if gone is not None and gone.done():
                        raise ClientGoneError(status)
                    if chunk:
                        if remaining is not None:
                            remaining -= len(chunk)
                            done = remaining == 0
                        await send(
                            {"type": "http.response.body", "body": chunk, "more_body": not done}
                        )
                        parts += 1
                        if gone is None and parts > 1 and not done:
                            gone = asyncio.ensure_future(_disconnected(receive))
            except httpx.HTTPError as exc:
                raise UpstreamAbortedError(status, type(exc).__name__) from exc
            finally:
                if gone is not None:
                    gone.cancel()
            if not done:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.body.aclose()
        return status


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


async def _disconnected(receive: Receive) -> None:
    """Return once the client is gone (or its server cannot tell any more)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: S110 - a server that cannot receive: treated as gone
        pass


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
