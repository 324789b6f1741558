"""Identity and purpose headers reach the upstream only as the sidecar proved and judged them.

The upstream is a real WSGI server (``wsgiref``) that records what it was
sent, twice over: the raw header lines, and the WSGI environ an application
reads, where ``X_Caller`` and ``X-Caller`` are both ``HTTP_X_CALLER`` and a
repeated header is comma-joined with the first copy first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import (
    QuietHandler,
    ServerThread,
    WsgiThread,
    audit_rows,
    policy_copy,
    poll,
    serve_sidecar,
    sidecar_settings,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"


class _Recorder(QuietHandler):
    """Keeps the raw header lines beside the environ the application gets."""

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["test.raw_headers"] = list(self.headers.items())
        return environ


class WsgiUpstream(WsgiThread):
    """A WSGI app under wsgiref in a thread; each request's view is kept in ``seen``."""

    handler = _Recorder

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        super().__init__()

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        self.seen.append(
            {
                "raw": environ["test.raw_headers"],
                "environ": {k: v for k, v in environ.items() if k.startswith("HTTP_")},
                "method": environ["REQUEST_METHOD"],
            }
        )
        start("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"ok": True}).encode()]


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, keys: Any
) -> Iterator[tuple[ServerThread, WsgiUpstream, Path]]:
    tmp = tmp_path_factory.mktemp("headers")
    policy = policy_copy(tmp / "policy", POLICIES)
    with WsgiUpstream() as upstream:
        settings = sidecar_settings(
            tmp, policy, keys.identity(), upstream=f"http://127.0.0.1:{upstream.port}"
        )
        served = serve_sidecar(settings)
        # As `guard sidecar` runs it: uvicorn does not take the peer from X-Forwarded-For.
        served.server.config.proxy_headers = False
        served.server.config.server_header = False
        with served as sidecar:
            yield sidecar, upstream, tmp / "audit.db"


def assert_never_reaches(proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any,
                         name: str) -> None:
    """A client's own ``name`` header, as spelled, in lower case and in upper case with
    ``_``, is proxied to neither the upstream's raw header lines nor its WSGI environ."""
    sidecar, upstream, _db = proxied
    token = keys.mint("hs", sub="svc:crm")
    for spelled in (name, name.lower(), name.upper().replace("-", "_")):
        answer = httpx.get(f"{sidecar.url}/customers/c-0001", headers=[
            ("Authorization", f"Bearer {token}"), ("X-Purpose", "relationship.management"),
            (spelled, "CN=admin,O=forged")], timeout=10)
        assert answer.status_code == 200, answer.text
        seen = upstream.seen[-1]
        assert "CN=admin,O=forged" not in [v for _, v in seen["raw"]], (spelled, seen["raw"])
        assert "CN=admin,O=forged" not in seen["environ"].values(), spelled


def _token(keys: Any, caller: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {keys.mint('hs', sub=caller)}")


FORGED = [
    ("X_Guard_Caller", "svc:support"),
    ("x-guard-caller", "svc:support"),
    ("X_Guard_Decision_Id", "forged"),
    ("X_Caller", "svc:support"),
    ("X-CALLER", "svc:support"),
    ("X-Forwarded-User", "admin"),
    ("X_Remote_User", "admin"),
    ("Remote-User", "admin"),
    ("X-Auth-Request-Email", "admin@example.com"),
    ("X-Forwarded-Client-Cert", "Hash=forged;Subject=CN=admin"),
    ("X_Forwarded_For", "203.0.113.66"),
    ("X-Forwarded-For", "203.0.113.66"),
    ("Forwarded", "for=203.0.113.66;proto=https"),
    ("X-Real-IP", "203.0.113.66"),
    ("X-Forwarded-Host", "admin.example"),
    ("X-Original-URL", "/admin/delete-everything"),
    ("X-HTTP-Method-Override", "DELETE"),
    ("X_Http_Method_Override", "DELETE"),
]


def test_no_identity_header_variant_reaches_a_wsgi_upstream(
    proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any
) -> None:
    sidecar, upstream, db = proxied
    headers = [_token(keys, "svc:crm"), ("X-Purpose", "relationship.management"), *FORGED]
    resp = httpx.get(f"{sidecar.url}/customers/c-0001", headers=headers)
    assert resp.status_code == 200, resp.text
    seen = upstream.seen[-1]
    environ = seen["environ"]
    # What a WSGI application reads: only the sidecar's values, never a client's first.
    assert environ["HTTP_X_GUARD_CALLER"] == "svc:crm"
    assert environ["HTTP_X_GUARD_PURPOSE"] == "relationship.management"
    assert environ["HTTP_X_PURPOSE"] == "relationship.management"
    decision = audit_rows(db, "event_id = ?", (environ["HTTP_X_GUARD_DECISION_ID"],))
    assert (decision[0]["caller"], decision[0]["allowed"]) == ("svc:crm", 1)
    assert environ["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
    assert environ["HTTP_X_FORWARDED_HOST"] == f"127.0.0.1:{sidecar.port}"
    for name in (
        "HTTP_X_CALLER",
        "HTTP_X_FORWARDED_USER",
        "HTTP_X_REMOTE_USER",
        "HTTP_REMOTE_USER",
        "HTTP_X_AUTH_REQUEST_EMAIL",
        "HTTP_X_FORWARDED_CLIENT_CERT",
        "HTTP_FORWARDED",
        "HTTP_X_REAL_IP",
        "HTTP_X_ORIGINAL_URL",
        "HTTP_X_HTTP_METHOD_OVERRIDE",
    ):
        assert name not in environ, name
    # And the raw lines: no forged value under any spelling.
    assert not [(k, v) for k, v in seen["raw"] if v in {v for _, v in FORGED}]


@pytest.mark.parametrize(
    "purpose_lines",
    [
        [("X-Purpose", "relationship.management"), ("X-Purpose", "marketing.third_party")],
        [("X-Purpose", "relationship.management"), ("X_Purpose", "marketing.third_party")],
        [("X-Purpose", "relationship.management, marketing.third_party")],
        [("X-Purpose", "relationship.management,marketing.third_party")],
    ],
    ids=["repeated", "underscore-twin", "comma-joined", "comma-joined-tight"],
)
def test_a_repeated_or_joined_purpose_is_refused_as_malformed(
    proxied: tuple[ServerThread, WsgiUpstream, Path],
    keys: Any,
    purpose_lines: list[tuple[str, str]],
) -> None:
    sidecar, upstream, db = proxied
    reached = len(upstream.seen)
    resp = httpx.get(
        f"{sidecar.url}/customers/c-0001", headers=[_token(keys, "svc:crm"), *purpose_lines]
    )
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["reason"] == "malformed_request"
    assert len(upstream.seen) == reached  # never forwarded
    event = poll(lambda: audit_rows(db, "event_id = ?", (resp.json()["decision_id"],)))
    assert (event[0]["allowed"], event[0]["reason"]) == (0, "malformed_request")


def test_a_lone_underscore_purpose_is_judged_as_the_purpose(
    proxied: tuple[ServerThread, WsgiUpstream, Path], keys: Any
) -> None:
    """``X_Purpose`` alone is what a WSGI upstream reads as the purpose: judged as such."""
    sidecar, _, _ = proxied
    resp = httpx.get(
        f"{sidecar.url}/customers/c-0001",
        headers=[_token(keys, "svc:crm"), ("X_Purpose", "marketing.third_party")],
    )
    assert resp.status_code == 403
    assert resp.json()["reason"] == "purpose_not_granted"
