"""A ruling is handed to the journal's writer once; a cancelled commit says nothing was answered.

An enforcement point whose commit is cancelled (its task cancelled while it waits)
still has its decision queued: the writer writes it. Queuing the ruling again (the
middleware's "queue it rather than lose it") wrote the decision a second time, the
same event twice in the journal; now it is queued once, and an ``outcome`` with
``detail`` = ``aborted`` follows the decision, so the trail does not claim the
committed status was answered.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from guard._guard import Guard
from guard._types import Reason
from guard.audit import open_store
from guard.audit._journal import read_journal
from guard.audit._jverify import lanes
from tests.guard.test_guard_commit import ALLOWED, _guard


def _journal_events(tmp_path: Path) -> list[tuple[str, str, int | None, str | None, str | None]]:
    """(kind, event_id, http_status, decision_ref, detail) of every event in the journal."""
    out = []
    for lane in lanes(tmp_path / "journal"):
        for record in read_journal(lane):
            assert isinstance(record, tuple)
            row = json.loads(record[1])
            if isinstance(row, list):  # events are arrays, checkpoints objects
                out.append((row[1], row[0], row[17], row[21], row[22]))
    return out


def test_a_cancelled_commit_is_written_once_and_followed_by_aborted(tmp_path: Path) -> None:
    guard = _guard(tmp_path)

    async def run() -> None:
        ruling = guard.decide(ALLOWED)
        task = asyncio.ensure_future(guard.acommit(ruling, 500))
        await asyncio.sleep(0)  # queued; waiting for the writer
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert guard.post(ruling, 500)  # as the middleware does: nothing queued again
        else:
            raise AssertionError("the commit was not cancelled")

    try:
        asyncio.run(run())
        guard.trail.flush()
    finally:
        guard.close()
    events = _journal_events(tmp_path)
    [decision] = [e for e in events if e[0] == "decision"]
    [outcome] = [e for e in events if e[0] == "outcome"]
    assert decision[2] == 500
    assert outcome[2:] == (500, decision[1], "aborted")
    assert events.index(decision) < events.index(outcome)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        assert store.rows("SELECT count(*) FROM audit_event WHERE kind = 'decision'") == [(1,)]
    finally:
        store.close()


def test_a_ruling_committed_twice_is_refused_the_second_time(tmp_path: Path) -> None:
    guard = _guard(tmp_path)

    async def run() -> None:
        ruling = guard.decide(ALLOWED)
        first = await guard.acommit(ruling, 200)
        assert first.decision.allowed
        assert first.decision_id
        again = await guard.acommit(ruling, 200)
        assert again.decision.reason is Reason.AUDIT_UNAVAILABLE
        assert again.decision_id == ""

    try:
        asyncio.run(run())
        ruling = guard.decide(ALLOWED)
        assert guard.commit(ruling, 200).decision.allowed
        assert guard.commit(ruling, 200).decision.reason is Reason.AUDIT_UNAVAILABLE
        assert guard.post(ruling, 200)  # queued already: nothing more
        guard.trail.flush()
    finally:
        guard.close()
    decisions = [e for e in _journal_events(tmp_path) if e[0] == "decision"]
    assert len(decisions) == len({e[1] for e in decisions}) == 2


def test_an_uncommitted_or_statusless_ruling_is_not_abandoned(tmp_path: Path) -> None:
    guard: Guard = _guard(tmp_path)
    try:
        assert not guard.abandon(guard.decide(ALLOWED))  # never handed to the writer

        async def write_first() -> bool:
            ruling = guard.decide(ALLOWED)
            await guard.acommit(ruling, None)  # a write: its outcome follows its handler
            return guard.abandon(ruling)

        assert not asyncio.run(write_first())
    finally:
        guard.close()
