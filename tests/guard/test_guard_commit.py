"""``Guard.decide``, then ``acommit`` or ``post``: one event, with the status answered."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from guard import Reason, Request
from guard._guard import Guard
from guard.audit import open_store
from guard.audit._jtrail import JournalTrail
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"k" * 32
ALLOWED = Request("svc:crm", "relationship.management", ("contact",), subject="cust-7")


def _guard(tmp_path: Path) -> Guard:
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys_at(tmp_path / "sign.key"),
                       hmac_key=KEY, journal=tmp_path / "journal")
    return Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=KEY)


def _rows(tmp_path: Path) -> list[tuple[str, int, int | None]]:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        return [(str(r[0]), int(r[1]), r[2]) for r in store.rows(
            "SELECT kind, allowed, http_status FROM audit_event WHERE kind = 'decision' "
            "ORDER BY ts")]
    finally:
        store.close()


def test_decide_records_nothing_until_committed_with_its_status(tmp_path: Path) -> None:
    guard = _guard(tmp_path)

    async def run() -> str:
        ruling = guard.decide(ALLOWED)
        assert ruling.decision.allowed  # known before anything is recorded
        guard.trail.flush()
        assert _rows(tmp_path) == []
        checked = await guard.acommit(ruling, 204)
        assert checked.decision is ruling.decision
        return checked.decision_id

    decision_id = asyncio.run(run())
    assert decision_id
    assert guard.post(guard.decide(ALLOWED), 500)  # queued, not awaited
    guard.close()
    assert _rows(tmp_path) == [("decision", 1, 204), ("decision", 1, 500)]


def test_a_commit_the_journal_refuses_is_audit_unavailable(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    trail = guard.trail
    assert isinstance(trail, JournalTrail)
    full = os.open("/dev/full", os.O_WRONLY)
    good = os.dup(trail.journal._fd)
    os.dup2(full, trail.journal._fd)
    try:
        checked = asyncio.run(guard.acommit(guard.decide(ALLOWED), 200))
        assert checked.decision.reason is Reason.AUDIT_UNAVAILABLE
        assert not checked.decision.allowed
        assert checked.decision_id == ""
        assert guard.commit(guard.decide(ALLOWED)).decision.reason is Reason.AUDIT_UNAVAILABLE
    finally:
        os.dup2(good, trail.journal._fd)
        os.close(full)
        os.close(good)
    guard.close()
    assert _rows(tmp_path) == []
