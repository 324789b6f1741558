"""Review of forwarded identity: nothing a client writes about who or where it is reaches the
upstream, or is believed by the sidecar, unless the guard or its configured hop set it.

- Proxy mode under uvicorn with its proxy headers on (its default when run by hand,
  trusting loopback peers, or ``--forwarded-allow-ips '*'``), served with the HTTP
  protocol ``guard sidecar`` uses: a client's ``X-Forwarded-For`` or
  ``X-Forwarded-Proto`` must not become the peer or scheme the sidecar believes and
  sends upstream. Any spelling (case, ``_`` for ``-``, repeated lines) of a
  forwarded, address or guard header is dropped.
- nginx ``auth_request`` with the configuration docs/sidecar.md gives (read from the
  document itself, so the two cannot drift apart): what reaches the upstream about
  the caller, the decision and the client's address is nginx's and the guard's,
  never the client's.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecarkit import (
    Nginx,
    ServerThread,
    free_port,
    need_nginx,
    policy_copy,
    serve_sidecar,
    sidecar_settings,
)
from upstreamkit import ThreadedUpstream, read_head

from middleware.sidecar._server import HTTP_PROTOCOL

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
SPOOFED = "203.0.113.66"
FORGED = [
    ("X-Forwarded-For", SPOOFED),
    ("X-Forwarded-For", f"{SPOOFED}, 127.0.0.1"),
    ("x-forwarded-for", SPOOFED),
    ("X_Forwarded_For", SPOOFED),
    ("Forwarded", f"for={SPOOFED};proto=https"),
    ("X-Real-IP", SPOOFED),
    ("x-real-ip", SPOOFED),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "admin.example"),
    ("X-Guard-Caller", "svc:support"),
    ("x-guard-caller", "svc:support"),
    ("X_Guard_Caller", "svc:support"),
    ("X-Guard-Purpose", "forged.purpose"),
    ("X-Guard-Decision-Id", "forged-id"),
    ("X-GUARD-DECISION-ID", "forged-id"),
    ("X-Guard-Policy-Version", "forged-version"),
    ("X-Guard-Proxy-Secret", "forged-secret"),
    ("X-Caller", "svc:support"),
]
FORGED_VALUES = {value for _, value in FORGED} | {SPOOFED}


class HeadUpstream(ThreadedUpstream):
    """Answers every request 200 and keeps each request's raw header lines."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[list[tuple[bytes, bytes]]] = []
        self._lock = threading.Lock()
        self.start()

    def handle(self, conn: socket.socket) -> None:
        while (head := read_head(conn)) is not None:
            lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
            with self._lock:
                self.heads.append([tuple(line.split(b":", 1)) for line in lines  # type: ignore[misc]
                                   if b":" in line])
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _named(head: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The values of every line of ``head`` whose name is ``name`` in any case or spelling."""
    return [value.strip() for key, value in head
            if key.strip().lower().replace(b"_", b"-") == name]


def _no_forged_value(head: list[tuple[bytes, bytes]]) -> None:
    for key, value in head:
        text = value.decode("latin-1")
        assert not any(forged in text for forged in FORGED_VALUES), (key, value)


class _GuardServer(ServerThread):
    """The sidecar under uvicorn with proxy headers on, as uvicorn runs by hand, with the HTTP
    protocol ``guard sidecar`` uses (the documented way to run it under uvicorn yourself)."""

    def __init__(self, app: Any, port: int) -> None:
        super().__init__(app, port)
        self.server.config.http = HTTP_PROTOCOL
        self.server.config.proxy_headers = True
        self.server.config.forwarded_allow_ips = "*"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, keys: Any
            ) -> Iterator[tuple[ServerThread, HeadUpstream, str]]:
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp("side2-identity")
    upstream = HeadUpstream()
    policy = policy_copy(tmp / "policy", POLICIES)
    settings_ = sidecar_settings(tmp, policy, keys.identity(),
                                 upstream=f"http://127.0.0.1:{upstream.port}")
    try:
        with _GuardServer(create_app(settings_), free_port()) as server:
            yield server, upstream, keys.mint("hs", sub="svc:crm")
    finally:
        upstream.close()


def _proxied_get(server: ServerThread, token: str, extra: list[tuple[str, str]]) -> None:
    headers = [("Authorization", f"Bearer {token}"), ("X-Purpose", "relationship.management"),
               *extra]
    resp = httpx.get(f"{server.url}/customers/c-0001", headers=headers)
    assert resp.status_code == 200, resp.text


def _sidecar_set_only(head: list[tuple[bytes, bytes]], port: int) -> None:
    assert _named(head, b"x-forwarded-for") == [b"127.0.0.1"]
    assert _named(head, b"x-forwarded-proto") == [b"http"]
    assert _named(head, b"x-forwarded-host") == [b"127.0.0.1:%d" % port]
    assert _named(head, b"x-guard-caller") == [b"svc:crm"]
    assert _named(head, b"x-guard-purpose") == [b"relationship.management"]
    assert len(_named(head, b"x-guard-decision-id")) == 1
    for name in (b"forwarded", b"x-real-ip", b"x-caller", b"x-guard-proxy-secret",
                 b"x-guard-policy-version"):
        assert _named(head, name) == [], name
    _no_forged_value(head)


def test_a_client_forwarded_address_is_never_the_peer_the_sidecar_believes(
    proxied: tuple[ServerThread, HeadUpstream, str],
) -> None:
    """uvicorn's proxy headers would make the client's X-Forwarded-For the peer (and its
    X-Forwarded-Proto the scheme); the sidecar's protocol never lets them."""
    server, upstream, token = proxied
    _proxied_get(server, token, FORGED)
    _sidecar_set_only(upstream.heads[-1], server.port)


_NAMES = ["X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host",
          "X-Guard-Caller", "X-Guard-Purpose", "X-Guard-Decision-Id", "X-Guard-Policy-Version",
          "X-Guard-Proxy-Secret", "X-Caller"]


@st.composite
def _spelling(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(_NAMES))
    cased = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
    return cased.replace("-", "_") if draw(st.booleans()) else cased


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(_spelling(), st.sampled_from(sorted(FORGED_VALUES))),
                      min_size=1, max_size=6))
def test_no_spelling_or_repetition_of_a_forwarded_or_guard_header_gets_through(
    proxied: tuple[ServerThread, HeadUpstream, str], lines: list[tuple[str, str]]
) -> None:
    server, upstream, token = proxied
    _proxied_get(server, token, lines)
    _sidecar_set_only(upstream.heads[-1], server.port)


def _documented(heading: str) -> str:
    """The first nginx block under ``heading`` in docs/sidecar.md."""
    text = (REPO / "docs" / "sidecar.md").read_text()
    section = text.split(heading, 1)[1]
    found = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory, keys: Any
            ) -> Iterator[tuple[str, HeadUpstream]]:
    """nginx with the documented auth_request configuration, a sidecar, a recording upstream."""
    need_nginx()
    tmp = tmp_path_factory.mktemp("side2-nginx")
    policy = policy_copy(tmp / "policy", POLICIES)
    upstream = HeadUpstream()
    front = free_port()
    try:
        with serve_sidecar(sidecar_settings(tmp, policy, keys.identity())) as sidecar:
            block = (_documented("## Check endpoint: nginx `auth_request`")
                     .replace("127.0.0.1:8181", f"127.0.0.1:{sidecar.port}")
                     .replace("127.0.0.1:9000", f"127.0.0.1:{upstream.port}"))
            nginx = Nginx(tmp / "nginx", f"server {{\n listen 127.0.0.1:{front};\n{block}\n}}")
            nginx.start(front)
            try:
                yield f"http://127.0.0.1:{front}", upstream
            finally:
                nginx.stop()
    finally:
        upstream.close()


def test_the_documented_nginx_configuration_passes_no_client_identity_upstream(
    fronted: tuple[str, HeadUpstream], keys: Any
) -> None:
    url, upstream = fronted
    headers = [("Authorization", f"Bearer {keys.mint('hs', sub='svc:crm')}"),
               ("X-Purpose", "relationship.management"), *FORGED]
    resp = httpx.get(f"{url}/customers/c-0001", headers=headers)
    assert resp.status_code == 200, resp.text
    head = upstream.heads[-1]
    assert _named(head, b"x-guard-caller") == [b"svc:crm"]
    assert _named(head, b"x-guard-purpose") == [b"relationship.management"]
    assert len(_named(head, b"x-guard-decision-id")) == 1
    assert len(_named(head, b"x-guard-policy-version")) == 1
    assert _named(head, b"x-forwarded-for") == [b"127.0.0.1"]
    assert _named(head, b"x-real-ip") in ([], [b"127.0.0.1"])
    assert _named(head, b"x-forwarded-proto") in ([], [b"http"])
    for name in (b"forwarded", b"x-caller", b"x-guard-proxy-secret"):
        assert _named(head, name) == [], name
    _no_forged_value(head)


@pytest.mark.parametrize("name", [
    "Cf-Access-Client-Id",           # Cloudflare Access service tokens
    "Cf-Access-Client-Secret",
    "X-Remote-Group",                # Kubernetes' authenticating proxy
    "X-Remote-Extra-Scopes",
    "Remote-Groups",                 # Authelia
    "Remote-Email",
    "X-Pomerium-Claim-Email",        # Pomerium
    "X-Pomerium-Jwt-Assertion",
    "X-Authentik-Username",          # authentik
    "X-Webauth-Email",               # Grafana's auth proxy
    "X-Vouch-User",                  # Vouch Proxy
    "X-Amzn-Mtls-Clientcert",        # AWS ALB mutual TLS
    "X-ARR-ClientCert",              # Azure App Service client certificates
    "X-Envoy-External-Address",      # Envoy's trusted client address
    "X-Envoy-Original-Path",
    "X-Original-Host",               # rewrites a framework may believe
    "X-Original-Proto",
])
def test_common_auth_proxy_identity_headers_are_the_sidecars(name: str) -> None:
    """The forwarded-headers list covers what docs/sidecar.md says it covers, and what
    common auth proxies and platforms set: a client's copy never goes upstream."""
    from middleware.sidecar._proxy import request_headers

    for spelled in (name, name.lower(), name.upper().replace("-", "_")):
        out = request_headers([(spelled.encode(), b"forged")], strip=frozenset(), add={},
                              peer="127.0.0.1")
        assert b"forged" not in [value for _, value in out], spelled
