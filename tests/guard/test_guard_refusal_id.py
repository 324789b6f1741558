"""A refusal for want of time names the id its decision is written with.

The guard makes no event id on the event loop: the journal's writer sets the id
it writes a decision with in the decision's fields when it builds the event, and a
refusal for want of time reads it there, or, when the writer has not taken the
decision yet, sets one the writer then takes. The journal is held for real: its
append blocks, either on the decision's own batch (the writer has built it) or
on the batch before (the decision still waits in the queue).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from guard.audit import EventKind, open_store
from guard.audit._fields import IdFields, content
from tests.guard.test_guard_commit import ALLOWED, _guard


class _Held:
    """The writer's journal, its next append held until ``go`` is set."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.entered = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    def append(self, records: Any) -> Any:
        if not self.go.is_set():
            self.entered.set()
            self.go.wait(30)
        return self.journal.append(records)


@pytest.mark.parametrize("where", ["built", "queued"])
def test_the_refusal_names_the_decision_written_after_its_deadline(
    tmp_path: Path, where: str
) -> None:
    guard = _guard(tmp_path)
    guard.durable_within = 0.3
    writer = guard.trail.writer
    held = _Held(writer.journal)
    writer.journal = held

    async def run() -> None:
        if where == "queued":  # the batch before holds the writer: the decision waits
            guard.trail.post_fields(EventKind.HEARTBEAT, {"detail": "the batch before"})
            assert await asyncio.to_thread(held.entered.wait, 30)
        future = guard.begin_commit(guard.decide(ALLOWED), 200)
        with pytest.raises(TimeoutError):
            await future
        assert held.entered.is_set()

    try:
        asyncio.run(run())
        held.go.set()
        guard.trail.flush()
    finally:
        held.go.set()
        guard.close()
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        [(decision_id, status)] = store.rows(
            "SELECT event_id, http_status FROM audit_event WHERE kind = 'decision'")
        [(ref, refused, detail)] = store.rows(
            "SELECT decision_ref, http_status, detail FROM audit_event WHERE kind = 'outcome'")
    finally:
        store.close()
    assert status == 200
    assert (ref, refused, detail) == (decision_id, 403, "audit_unavailable")


def test_only_id_fields_get_the_writers_id_and_a_producers_own_id_wins() -> None:
    plain = {"caller": "svc:crm"}
    assert content(EventKind.DECISION, plain, b"k" * 32, "now", "id-1")[0] == "id-1"
    assert plain == {"caller": "svc:crm"}  # a dict a producer reuses is left as it was
    handed = IdFields(caller="svc:crm")
    assert content(EventKind.DECISION, handed, b"k" * 32, "now", "id-2")[0] == "id-2"
    assert handed["event_id"] == "id-2"
    again = content(EventKind.DECISION, handed, b"k" * 32, "now", "id-3")[0]
    assert again == "id-2"  # set first (by the writer or the producer): that one is written
