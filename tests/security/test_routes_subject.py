"""The subject is the id the app or upstream will see, or the request is refused.

The rule (docs/security.md, "Route resolution"): 1 to 128 characters from
``A-Z a-z 0-9 - . _ ~ : @``, not ``.`` or ``..``; a ``{name:path}`` parameter may
also hold ``/`` between such segments. Anything else is ``malformed_request``.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, guard_settings
from tokenkit import audit_rows as middleware_rows

from guard._guard import Guard
from guard.audit import load_hmac_key, pseudonymise
from middleware import GuardMiddleware, RouteTable, guarded

REPO = Path(__file__).resolve().parents[2]
_RULE = re.compile(r"[A-Za-z0-9._~:@-]{1,128}")
_ALPHABET = string.ascii_letters + string.digits + "-._~:@;,%=+!$&'()* \t\x00\x7f/?#é"
_values = st.one_of(
    st.text(alphabet=_ALPHABET, min_size=0, max_size=12),
    st.text(alphabet=string.ascii_lowercase + "-", min_size=120, max_size=140),
    st.sampled_from(["c-0001", "c-0001;foo", "c-0001,c-0002", "c%3B1", ".", "..", "",
                     "c-0001 ", "a@b:c~d", "A" * 128, "A" * 129]),
)


def _in_rule(value: str, *, path: bool = False) -> bool:
    if path:
        return (re.fullmatch(r"[A-Za-z0-9._~:@/-]{1,128}", value) is not None
                and all(s not in ("", ".", "..") for s in value.split("/")))
    return _RULE.fullmatch(value) is not None and value not in (".", "..")


# --- the middleware: the value Starlette's match gives the handler ---

@pytest.fixture(scope="module")
def app_env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("subject")
    config = guard_settings(base, keys)
    guard = Guard.from_settings(config)
    seen: list[str] = []

    @guarded(categories=["identity", "contact"], subject="customer_id")
    async def customer(request: Request) -> PlainTextResponse:
        seen.append(request.path_params["customer_id"])
        return PlainTextResponse("ok")

    @guarded(categories=["contact"], subject="key")
    async def document(request: Request) -> PlainTextResponse:
        seen.append(request.path_params["key"])
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/customers/{customer_id}", customer),
                            Route("/documents/{key:path}", document)])
    app.add_middleware(GuardMiddleware, guard=guard, settings=config, routes=RouteTable(()))
    token = keys.mint("rsa", sub="svc:crm")
    yield {"app": app, "seen": seen, "db": base / "audit.db", "token": token,
           "hmac": load_hmac_key(base / "subject-hmac.key")}
    guard.close()


async def _call(app: Any, path: str, token: str) -> tuple[int, dict[str, str]]:
    """One request as a server would pass it on: ``path`` is already percent-decoded."""
    sent: list[Any] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path,
             "raw_path": quote(path).encode(), "root_path": "", "query_string": b"",
             "client": ("127.0.0.1", 5000), "server": ("svc", 80),
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"x-purpose", b"relationship.management")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode("latin-1") for k, v in start["headers"]}


def _decision(db: Path, headers: dict[str, str], body_id: str | None = None) -> dict[str, Any]:
    decision_id = headers.get("x-guard-decision-id") or body_id
    rows = middleware_rows(db, "event_id = ?", (decision_id,))
    assert len(rows) == 1
    return rows[0]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values.filter(lambda v: "/" not in v))
@example(value="c-0001;foo")
def test_middleware_audits_exactly_the_handlers_subject_or_refuses(
    app_env: dict[str, Any], value: str,
) -> None:
    app_env["seen"].clear()
    status, headers = asyncio.run(_call(app_env["app"], "/customers/" + value, app_env["token"]))
    if value == "":  # no segment: no route matches, nothing runs
        assert status in (401, 403)
        assert app_env["seen"] == []
        return
    row = _decision(app_env["db"], headers)
    if _in_rule(value):
        assert status == 200
        assert app_env["seen"] == [value]
        assert row["subject"] == pseudonymise(app_env["hmac"], value)
    else:
        assert status == 403
        assert app_env["seen"] == []
        assert (row["reason"], row["subject"]) == ("malformed_request", None)
        assert row["rule"] == ("check:malformed_request:subject",)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_values, min_size=1, max_size=3))
def test_middleware_path_subjects_follow_the_same_rule(
    app_env: dict[str, Any], parts: list[str],
) -> None:
    value = "/".join(parts)
    app_env["seen"].clear()
    status, headers = asyncio.run(_call(app_env["app"], "/documents/" + value, app_env["token"]))
    row = _decision(app_env["db"], headers)
    if _in_rule(value, path=True):
        assert status == 200
        assert row["subject"] == pseudonymise(app_env["hmac"], value)
    else:
        assert status == 403
        assert app_env["seen"] == []
        assert (row["reason"], row["subject"]) == ("malformed_request", None)


# --- the sidecar: the value the upstream will be asked for ---

@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("subject-sidecar")
    policy = policy_copy(tmp / "policy", REPO / "policies")
    config = sidecar_settings(tmp, policy, keys.identity())
    with serve_sidecar(config) as server:
        server.db = tmp / "audit.db"  # type: ignore[attr-defined]
        server.hmac = load_hmac_key(tmp / "keys" / "subject-hmac.key")  # type: ignore[attr-defined]
        yield server


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values.filter(lambda v: "/" not in v and v != ""))
@example(value="c-0001;foo")
def test_sidecar_audits_exactly_the_upstreams_subject_or_refuses(
    sidecar: ServerThread, keys: Keys, value: str,
) -> None:
    headers = {"authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}",
               "x-purpose": "relationship.management",
               "x-original-uri": "/customers/" + quote(value, safe=""),
               "x-original-method": "GET"}
    response = httpx.get(f"{sidecar.url}/v1/check", headers=headers, timeout=10)
    if _in_rule(value):
        assert response.status_code == 200
        rows = audit_rows(sidecar.db,  # type: ignore[attr-defined]
                          "event_id = ?", (response.headers["x-guard-decision-id"],))
        assert rows[0]["subject"] == pseudonymise(sidecar.hmac, value)  # type: ignore[attr-defined]
    else:
        assert response.status_code in (400, 403)
        assert response.json()["reason"] == "malformed_request"
