"""Properties over HTTP: whatever arrives, the middleware agrees with the engine and audits it."""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenkit import Keys, audit_rows, guard_settings

from examples.customers import create_app
from guard._guard import Guard
from guard._types import Reason, Request
from guard.cli._token import issue_token
from guard.engine import decide
from middleware.routes import RouteTable

CALLERS = ["svc:crm", "svc:billing", "svc:analytics", "svc:auth", "grp:exalens-us",
           "svc:marketing", "proc:payments", "svc:nobody", None]
PURPOSES = ["relationship.management", "order.processing", "analytics.improvement",
            "business.administration", "marketing.third_party", "marketing", "rights.request",
            "promotion.prize_draw", ""]
PATHS = ["/customers/c-0001", "/customers/c-0002/contact", "/customers/c-0003/payment",
         "/customers/c-0004/profile", "/customers/c-0005/devices", "/customers/stats",
         "/customers/c-0006/health", "/internal/debug", "/nowhere", "/healthz"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("props")
    settings_ = guard_settings(base, keys)
    guard = Guard.from_settings(settings_)
    tokens = {c: issue_token(settings_.identity, c, None, 600) for c in CALLERS if c}
    yield {"app": create_app(settings_, guard=guard), "guard": guard, "db": base / "audit.db",
           "tokens": tokens}
    guard.close()


purpose_text = st.one_of(st.sampled_from(PURPOSES),
                         st.text(alphabet=string.ascii_letters + string.digits + "._- !",
                                 max_size=30))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caller=st.sampled_from(CALLERS), purpose=purpose_text, path=st.sampled_from(PATHS),
       method=st.sampled_from(["GET", "PUT", "DELETE"]))
def test_http_answer_matches_the_engine_and_is_audited(
    env: dict[str, Any], policy_dir: Any, caller: str | None, purpose: str, path: str,
    method: str,
) -> None:
    headers = {"x-purpose": purpose} if purpose else {}
    if caller:
        headers["authorization"] = f"Bearer {env['tokens'][caller]}"

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=env["app"])
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.request(method, path, headers=headers)

    response = asyncio.run(call())
    assert response.status_code in (200, 401, 403, 404, 405, 422)
    if path == "/healthz":  # public for every method: no decision, the app answers
        assert response.status_code == (200 if method == "GET" else 405)
        assert "x-guard-decision-id" not in response.headers
        return
    if response.status_code in (401, 403):
        body = response.json()
        reason = Reason(body["reason"])
        row = audit_rows(env["db"], "event_id = ?", (body["decision_id"],))[0]
        assert row["reason"] == reason.value
        assert row["allowed"] == 0
    else:
        decision_id = response.headers["x-guard-decision-id"]
        row = audit_rows(env["db"], "event_id = ?", (decision_id,))[0]
        assert row["allowed"] == 1
        reason = Reason.ALLOWED
    purpose = purpose.strip()  # header values are trimmed
    if not _PURPOSE.fullmatch(purpose or "ok"):  # refused whoever sends it
        assert reason is Reason.MALFORMED_REQUEST
        assert row["caller"] == (caller or "")
        return
    if caller is None:
        assert response.status_code == 401
        assert reason is Reason.UNAUTHENTICATED
        return
    match = ROUTES.match(method, path)
    if match is None:
        assert reason is Reason.ROUTE_NOT_DECLARED
        return
    subject = match.params.get(match.rule.subject or "")
    expected = decide(env["guard"].holder.current,
                      Request(caller, purpose, match.rule.categories, match.rule.action, subject))
    assert reason is expected.reason


ROUTES = RouteTable.from_csv(Path(__file__).resolve().parents[2] / "policies" / "routes.csv")
_PURPOSE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
