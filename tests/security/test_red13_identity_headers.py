"""Thirteenth review: still more identity headers never reach the upstream.

The proxy drops a client's copy of every header a server, platform, mesh or auth proxy sets
to say who is calling (the second and sixth reviews' lists). It missed the standard one,
RFC 9440's ``Client-Cert`` and ``Client-Cert-Chain`` (a TLS-terminating proxy's client
certificate), nginx's usual ``X-SSL-Cert``, Linkerd's ``l5d-client-id`` (the mesh's proven
client identity) and its other ``l5d-`` headers (``l5d-dst-override`` moves the request to
another service), Google Cloud Endpoints' ``X-Endpoint-API-UserInfo`` and API Gateway's
``X-Apigateway-Api-Userinfo`` (the verified token's claims), the AWS Lambda adapters'
``X-Apigateway-Event`` and ``X-Apigateway-Context`` (the authorizer's claims; every
``X-Apigateway-`` header), and Apache's
``mod_auth_openidc`` (every ``OIDC_`` header: claims, tokens, user info), ``mod_auth_mellon``
(``MELLON_*``) and Shibboleth (``Shib-*``) headers, nor the client addresses Cloudflare
(``CF-Connecting-IPv6``), Fly.io (``Fly-Client-IP``) and Azure Front Door
(``X-Azure-ClientIP``, ``X-Azure-SocketIP``) set. A real uvicorn sidecar in front of a
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
    "Client-Cert", "Client-Cert-Chain", "X-SSL-Cert", "l5d-client-id", "l5d-dst-override",
    "X-Endpoint-API-UserInfo", "X-Apigateway-Api-Userinfo", "X-Apigateway-Event",
    "X-Apigateway-Context", "OIDC_CLAIM_email", "OIDC_CLAIM_sub", "OIDC_access_token",
    "OIDC_id_token_payload", "MELLON_NAME_ID", "Shib-Identity-Provider", "Shib-Session-ID",
    # mod_auth_openidc's user info (OIDCPassUserInfoAs json, jwt) and any other OIDC_ header;
    # any x-apigateway- header, as docs/sidecar.md names them
    "OIDC_userinfo_json", "OIDC_userinfo_jwt", "X-Apigateway-Authorizer",
]


# Where the request came from, as a CDN or platform in front tells its upstream: Cloudflare's
# Pseudo IPv4 keeps the client's IPv6 address in CF-Connecting-IPv6, Fly.io's proxy sets
# Fly-Client-IP, Azure Front Door X-Azure-ClientIP and X-Azure-SocketIP.
ADDRESSES = ["CF-Connecting-IPv6", "Fly-Client-IP", "X-Azure-ClientIP", "X-Azure-SocketIP"]


@pytest.mark.parametrize("name", FORGED + ADDRESSES)
def test_still_more_identity_headers_never_reach_the_upstream(
        proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any, name: str) -> None:
    assert_never_reaches(proxied, keys, name)


def test_headers_that_only_look_alike_still_reach_the_upstream(
        proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any) -> None:
    sidecar, upstream, _db = proxied
    token = keys.mint("hs", sub="svc:crm")
    answer = httpx.get(f"{sidecar.url}/customers/c-0001", headers=[
        ("Authorization", f"Bearer {token}"), ("X-Purpose", "relationship.management"),
        ("Client-Hints", "a"), ("X-Request-Id", "r-1")], timeout=10)
    assert answer.status_code == 200
    environ = upstream.seen[-1]["environ"]
    assert environ["HTTP_CLIENT_HINTS"] == "a"
    assert environ["HTTP_X_REQUEST_ID"] == "r-1"
