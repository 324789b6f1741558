"""The check endpoint refuses exactly what its OpenAPI document rules out, and audits it.

Targets are handed to the real sidecar app as raw ASGI header bytes, so values
no HTTP client would send (control characters, an empty header) reach it too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecarkit import audit_rows, policy_copy, sidecar_settings

from middleware.sidecar import build_sidecar, create_app
from middleware.sidecar._app import SidecarApp

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[tuple[SidecarApp, Path]]:
    tmp = tmp_path_factory.mktemp("targets")
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(tmp, policy, keys.identity())
    # Generated refusals from one client: each is asserted one by one (no count in their place).
    settings.audit.anonymous_refusals_per_source = 0
    sidecar = build_sidecar(settings)
    try:
        yield create_app(sidecar=sidecar), tmp / "audit.db"
    finally:
        sidecar.guard.close()


def _check(
    app: SidecarApp, headers: list[tuple[bytes, bytes]], method: str = "GET"
) -> tuple[int, dict[str, Any]]:
    """One check request straight into the ASGI app; (status, JSON body or {})."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/v1/check",
        "raw_path": b"/v1/check",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8181),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else {}


def _documented(app: SidecarApp) -> Any:
    """Whether the served OpenAPI document admits an X-Original-URI value (JSON Schema rules)."""
    from middleware.sidecar import openapi_document

    doc = openapi_document("/v1/check", version="0")
    params = doc["paths"]["/v1/check"]["get"]["parameters"]
    schema = next(p["schema"] for p in params if p["name"] == "X-Original-URI")
    # ECMA-262 "$" ends the input; Python's would also match before a final newline.
    pattern = re.compile(schema["pattern"].removesuffix("$") + r"\Z")

    def admits(value: str) -> bool:
        return (
            schema["minLength"] <= len(value) <= schema["maxLength"]
            and pattern.search(value) is not None
        )

    return admits


_TRICKY = st.sampled_from(
    ["/", "/", "a", "Z", "9", ".", "..", "%", "%2e", "%2F", "%25", "%41", "%C3%A9", "%ff",
     "#", "?", ";", "=", "&", " ", "\t", "\x00", "\x01", "\x7f", "\\", "é", "*", "http:",
     "customers", "public", "c-0001", "~", "@", ":"]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_TRICKY, max_size=10).map("".join))
def test_the_check_refuses_exactly_what_the_document_rules_out(
    app: tuple[SidecarApp, Path], target: str
) -> None:
    sidecar_app, _ = app
    status, _ = _check(sidecar_app, [(b"x-original-uri", target.encode("latin-1", "replace"))])
    admitted = _documented(sidecar_app)(target.encode("latin-1", "replace").decode("latin-1"))
    assert (status != 400) == admitted, (target, status)


@pytest.mark.parametrize(
    "target",
    ["", "/customers/c-0001\x01", "/customers/c-0001\x00", "/customers/\tc-0001", "x" * 5000],
    ids=["empty", "soh", "nul", "tab", "too-long"],
)
def test_a_refused_check_is_an_audit_event(
    app: tuple[SidecarApp, Path], keys: Any, target: str
) -> None:
    sidecar_app, db = app
    token = keys.mint("hs", sub="svc:crm").encode()
    status, problem = _check(
        sidecar_app,
        [(b"x-original-uri", target.encode("latin-1")), (b"authorization", b"Bearer " + token)],
    )
    assert status == 400
    assert problem["reason"] == "malformed_request"
    rows = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert [(r["allowed"], r["reason"], r["caller"], r["http_route"]) for r in rows] == [
        (0, "malformed_request", "svc:crm", "<refused>")
    ]


def test_a_check_without_a_target_is_an_audit_event_too(app: tuple[SidecarApp, Path]) -> None:
    sidecar_app, db = app
    status, problem = _check(sidecar_app, [])
    assert status == 400
    rows = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert [(r["reason"], r["caller"], r["http_status"]) for r in rows] == [
        ("malformed_request", "", 400)
    ]


@pytest.mark.parametrize(
    "purposes",
    [
        [(b"x-purpose", b"relationship.management"), (b"x-purpose", b"marketing.third_party")],
        [(b"x-purpose", b"relationship.management"), (b"x_purpose", b"marketing.third_party")],
        [(b"x-purpose", b"relationship.management,marketing.third_party")],
    ],
    ids=["repeated", "underscore-twin", "comma-joined"],
)
def test_a_check_with_two_purposes_is_refused_as_malformed(
    app: tuple[SidecarApp, Path], keys: Any, purposes: list[tuple[bytes, bytes]]
) -> None:
    """nginx passes the client's headers to the check as they came: two purposes stay two."""
    sidecar_app, db = app
    token = keys.mint("hs", sub="svc:crm").encode()
    status, problem = _check(
        sidecar_app,
        [(b"x-original-uri", b"/customers/c-0001"), (b"authorization", b"Bearer " + token),
         *purposes],
    )
    assert (status, problem["reason"]) == (403, "malformed_request")
    rows = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert [(r["allowed"], r["reason"]) for r in rows] == [(0, "malformed_request")]


def test_a_check_request_with_a_method_no_proxy_sends_is_405(
    app: tuple[SidecarApp, Path],
) -> None:
    sidecar_app, _ = app
    status, problem = _check(sidecar_app, [(b"x-original-uri", b"/public/x")], method="QUERY")
    assert (status, problem["reason"]) == (405, "malformed_request")
