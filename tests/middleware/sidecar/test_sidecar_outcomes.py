"""Outcome events of proxied requests: queued off the request path, never left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sidecarkit import audit_rows, policy_copy, sidecar_settings

from bench._pg import free_port
from guard._types import HttpContext, Request
from middleware.sidecar import _outcomes, create_app
from middleware.sidecar._app import SidecarApp
from middleware.sidecar._outcomes import PendingOutcomes

pytestmark = pytest.mark.anyio
POLICIES = Path(__file__).resolve().parents[3] / "policies"


def proxy_app(tmp_path: Path, keys: Any) -> SidecarApp:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    upstream = f"http://127.0.0.1:{free_port()}"
    return create_app(sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream))


async def decided(app: SidecarApp) -> str:
    """The id of a durably recorded decision."""
    request = Request("svc:crm", "relationship.management", ("contact",))
    checked = await app.sidecar.guard.acheck(request, HttpContext("GET", "/customers/{id}"))
    assert checked.decision_id
    return checked.decision_id


def outcomes_of(app: SidecarApp, db: Path, decision_id: str) -> list[int]:
    app.sidecar.guard.trail.flush()
    return [r["http_status"] for r in audit_rows(db, "decision_ref = ?", (decision_id,))]


async def test_the_next_request_hands_queued_outcomes_to_the_trail(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_outcomes, "FALLBACK_SECONDS", 60.0)  # only flush_soon can send it
    app = proxy_app(tmp_path, keys)
    outcomes = app.sidecar.outcomes
    assert isinstance(outcomes, PendingOutcomes)
    try:
        decision_id = await decided(app)
        outcomes.add(decision_id, 200, HttpContext("GET", "/customers/{id}", 200))
        assert outcomes_of(app, tmp_path / "audit.db", decision_id) == []  # still queued
        outcomes.flush_soon()  # what the next proxied request does before it is judged
        await asyncio.sleep(0)
        assert outcomes_of(app, tmp_path / "audit.db", decision_id) == [200]
    finally:
        app.sidecar.guard.close()


async def test_queued_outcomes_reach_the_trail_when_no_request_follows(
    tmp_path: Path, keys: Any
) -> None:
    app = proxy_app(tmp_path, keys)
    outcomes = app.sidecar.outcomes
    assert outcomes is not None
    try:
        decision_id = await decided(app)
        outcomes.add(decision_id, 204, HttpContext("PUT", "/files/{name}", 204))
        await asyncio.sleep(0.05)  # well past the fallback timer, which fires first
        assert outcomes_of(app, tmp_path / "audit.db", decision_id) == [204]
    finally:
        app.sidecar.guard.close()


async def test_shutdown_records_outcomes_still_queued(tmp_path: Path, keys: Any) -> None:
    app = proxy_app(tmp_path, keys)
    starlette = app.starlette
    async with starlette.router.lifespan_context(starlette):
        decision_id = await decided(app)
        outcomes = app.sidecar.outcomes
        assert outcomes is not None
        outcomes.add(decision_id, 200, HttpContext("GET", "/customers/{id}", 200))
    # The lifespan closed the trail; the outcome is in the store all the same.
    rows = audit_rows(tmp_path / "audit.db", "decision_ref = ?", (decision_id,))
    assert [r["http_status"] for r in rows] == [200]


async def test_an_outcome_the_closed_trail_refuses_is_logged(
    tmp_path: Path, keys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = proxy_app(tmp_path, keys)
    outcomes = app.sidecar.outcomes
    assert outcomes is not None
    decision_id = await decided(app)
    app.sidecar.guard.close()
    outcomes.add(decision_id, 200, HttpContext("GET", "/customers/{id}", 200))
    with caplog.at_level("ERROR", logger="guard.sidecar"):
        outcomes.flush()
    assert f"the outcome of decision {decision_id} was not recorded" in caplog.text
