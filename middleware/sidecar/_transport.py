"""The transport the sidecar forwards with: httptools over asyncio, plain TCP or TLS."""

from __future__ import annotations

import ssl

import httpx

from middleware.sidecar._h1 import H1Transport

Forwarder = H1Transport
"""What :class:`middleware.sidecar._proxy.Proxy` sends with (``send`` and ``aclose``)."""


def upstream_transport(scheme: str, *, max_connections: int,
                       ssl_context: ssl.SSLContext | None = None) -> Forwarder:
    """The transport for an upstream: :class:`H1Transport`, with TLS for ``https``.

    Args:
        scheme: The upstream's scheme, ``http`` or ``https``.
        max_connections: Most connections open at once (all may be kept alive).
        ssl_context: TLS settings for ``https`` (default: the system's and certifi's
            certificate authorities, no environment variables, HTTP/1.1 by ALPN).
    """
    if scheme == "http":
        return H1Transport(max_connections=max_connections)
    if ssl_context is None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        ssl_context.set_alpn_protocols(["http/1.1"])
    return H1Transport(max_connections=max_connections, ssl_context=ssl_context)
