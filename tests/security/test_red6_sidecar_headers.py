"""Sixth review: identity headers of more proxies and platforms never reach the upstream.

In proxy mode the sidecar drops a client's copy of every header a common server,
platform or auth proxy sets to say who is calling (the second review's list). It
missed several that upstreams behind those proxies believe: the client-certificate
headers of the Kubernetes ingress-nginx controller (``ssl-client-verify``,
``ssl-client-subject-dn``, ``ssl-client-issuer-dn``) and Apache's (``SSL_CLIENT_S_DN``
and the rest, through a ``_`` spelling), Kong's ``X-Authenticated-Groups`` and its other
consumer headers, Azure App Service's ``X-MS-TOKEN-*`` tokens, App Engine's
``X-AppEngine-User-*``, Tailscale's ``Tailscale-User-*``, Teleport's JWT assertion,
oauth2-proxy's ``GAP-Auth`` and Kubernetes' ``Impersonate-*``: a client with any
token of its own sent ``ssl-client-verify: SUCCESS`` and
``ssl-client-subject-dn: CN=admin`` and the upstream read an administrator's
certificate. They are now the sidecar's too. A real uvicorn sidecar in front of a
real WSGI upstream that records the raw header lines and the environ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread

from tests.security.test_sidecar_headers import WsgiUpstream, assert_never_reaches, proxied

__all__ = ["proxied"]

FORGED = [
    "ssl-client-verify", "ssl-client-subject-dn", "ssl-client-issuer-dn", "SSL_CLIENT_S_DN",
    "SSL_CLIENT_VERIFY", "X-Authenticated-Groups", "X-Consumer-Custom-Id",
    "X-Consumer-Profile", "X-MS-TOKEN-AAD-ID-TOKEN", "X-MS-TOKEN-AAD-ACCESS-TOKEN",
    "X-AppEngine-User-Email", "X-AppEngine-User-Id", "Tailscale-User-Login",
    "Tailscale-User-Name", "Teleport-Jwt-Assertion", "GAP-Auth", "Impersonate-User",
    "Impersonate-Group", "Impersonate-Extra-Scopes",
]


@pytest.mark.parametrize("name", FORGED)
def test_more_identity_headers_never_reach_the_upstream(
        proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any, name: str) -> None:
    assert_never_reaches(proxied, keys, name)


def test_an_ordinary_header_still_reaches_the_upstream(
        proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any) -> None:
    sidecar, upstream, _db = proxied
    token = keys.mint("hs", sub="svc:crm")
    answer = httpx.get(f"{sidecar.url}/customers/c-0001", headers=[
        ("Authorization", f"Bearer {token}"), ("X-Purpose", "relationship.management"),
        ("X-Request-Id", "r-1"), ("Accept-Language", "en")], timeout=10)
    assert answer.status_code == 200
    environ = upstream.seen[-1]["environ"]
    assert environ["HTTP_X_REQUEST_ID"] == "r-1"
    assert environ["HTTP_ACCEPT_LANGUAGE"] == "en"
