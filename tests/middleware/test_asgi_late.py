"""A decision the journal writes after its request was refused for want of it.

The request is refused 403 ``audit_unavailable`` once its commit is past
``Guard.durable_within``; the refusal is queued behind the decision as an
``outcome`` event (status 403, ``detail`` = ``audit_unavailable``), so if the
journal then writes the decision after all, the trail does not say the client
was answered 200.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from holdkit import SECRET, Service, entered, service
from tokenkit import Keys, audit_rows

from guard._guard import LATE_REFUSAL
from guard._types import Reason, Request
from guard.audit import EventFilter, open_store, query_events

__all__ = ["service"]

pytestmark = pytest.mark.anyio
ROUTE = "/customers/{customer_id}"


async def _written(service: Service, events: int) -> None:
    """Wait until the journal holds ``events`` events (records that are not checkpoints)."""
    for _ in range(3000):
        if sum(p.startswith(b"[") for p in service.journal.durable) >= events:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the journal never held {events} events")


def _final_status(db: Path, decision_id: str) -> int | None:
    """The decision's final status as ``guard audit query`` reports it."""
    store = open_store(f"sqlite:///{db}")
    try:
        rows = [r for r in query_events(store, EventFilter(allowed=True))
                if r.event.event_id == decision_id]
    finally:
        store.close()
    assert len(rows) == 1
    return rows[0].outcome_status


async def test_a_read_refused_at_its_deadline_and_written_late_is_recorded_refused(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    service.guard.durable_within = 0.3
    sent: list[dict[str, Any]] = []
    await service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent)
    start, *body = sent  # the journal still holds the decision: refused
    assert start["status"] == 403
    text = b"".join(m.get("body", b"") for m in body)
    assert SECRET not in text
    assert b'"reason":"audit_unavailable"' in text
    await entered(service.journal)
    service.journal.release.set()  # ... and now it writes it after all
    await _written(service, 2)
    service.guard.trail.flush()
    db = tmp_path / "audit.db"
    [decision] = audit_rows(db, "kind = 'decision' AND http_route = ?", (ROUTE,))
    assert (decision["allowed"], decision["http_status"]) == (1, 200)
    outcomes = audit_rows(db, "decision_ref = ?", (decision["event_id"],))
    assert [(o["kind"], o["http_status"], o["detail"], o["http_route"]) for o in outcomes] == [
        ("outcome", 403, LATE_REFUSAL, ROUTE)]
    assert _final_status(db, decision["event_id"]) == 403


async def test_acommit_refused_at_its_deadline_and_written_late_is_recorded_refused(
    service: Service, tmp_path: Path
) -> None:
    guard = service.guard
    guard.durable_within = 0.3
    request = Request("svc:crm", "relationship.management", ("contact",), subject="c-0002")
    checked = await guard.acommit(guard.decide(request), 200)
    assert not checked.decision.allowed
    assert checked.decision.reason is Reason.AUDIT_UNAVAILABLE
    assert checked.decision_id == ""
    service.journal.release.set()
    await _written(service, 2)
    guard.trail.flush()
    db = tmp_path / "audit.db"
    [decision] = audit_rows(db, "kind = 'decision' AND allowed = 1")
    [outcome] = audit_rows(db, "kind = 'outcome'")
    assert (outcome["decision_ref"], outcome["http_status"], outcome["detail"]) == (
        decision["event_id"], 403, LATE_REFUSAL)


async def test_a_decision_durable_in_time_has_no_refusal(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    await service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent)
    assert sent[0]["status"] == 200
    service.guard.trail.flush()
    await asyncio.sleep(0.05)  # a late callback would have run by now
    service.guard.trail.flush()
    assert audit_rows(tmp_path / "audit.db", "kind = 'outcome'") == []
