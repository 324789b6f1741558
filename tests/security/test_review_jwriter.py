"""Review of the journal writer's lock-free queue: a waiter told "failed" is never written.

A coroutine queues its event without the lock and then checks whether the
writer's thread has ended. The writer can take that event, write it, and end
(``close`` from another thread) between the two: the producer must then get the
event's id, not an error, or the trail holds an event whose request was refused
for want of it. The interleaving is made exact by closing the writer at the
moment the producer reads the writer's idle flag (right after its append).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, load_public_key, load_signing_key, open_store
from guard.audit._fields import ChainKey
from guard.audit._journal import Journal
from guard.audit._jverify import verify_journal
from guard.audit._jwriter import JournalWriter
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys

FIELDS: dict[str, Any] = {"caller": "svc:crm", "purpose": "billing", "action": "read",
                          "allowed": True, "reason": "allowed", "subject_id": "customer-1",
                          "http_status": 200}


class ClosedAfterAppend(JournalWriter):
    """A writer closed (from the producer's own thread) right after a producer's append."""

    armed = False

    @property
    def _idle(self) -> bool:
        if ClosedAfterAppend.armed and self._queue:  # the producer has just appended
            ClosedAfterAppend.armed = False
            self.close()  # the writer takes the event, writes it and its thread ends
        return self.__dict__.get("_idle_flag", False)

    @_idle.setter
    def _idle(self, value: bool) -> None:
        self.__dict__["_idle_flag"] = value


def _events(keys: Keys, tmp_path: Path) -> int:
    store = open_store(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        report = verify_journal(store, tmp_path / "j", load_public_key(keys.public),
                                chain_key=CHAIN_KEY)
    finally:
        store.close()
    assert report.journal.ok, report.journal.problems
    return report.journal.events


def test_an_event_written_as_the_writer_stops_is_answered_with_its_id(tmp_path: Path) -> None:
    signing = tmp_path / "keys" / "audit-signing.key"
    load_signing_key(signing, create=True)
    keys = Keys(signing, signing.with_name(signing.name + ".pub"))
    journal = Journal(tmp_path / "j")
    writer = ClosedAfterAppend(journal, hmac_key=HMAC_KEY,
                               signing_key=load_signing_key(keys.signing), writer_id="test",
                               chain_key=ChainKey(CHAIN_KEY))

    async def produce() -> str | None:
        ClosedAfterAppend.armed = True
        try:
            future = writer.start(EventKind.DECISION, FIELDS)
        except AuditUnavailableError:
            return None
        return await asyncio.wait_for(future, 10)

    event_id = asyncio.run(produce())
    assert not writer.alive
    journal.close()
    written = _events(keys, tmp_path)
    # Told it failed (None): nothing may be in the trail. Given an id: it is there.
    assert (event_id is not None) == (written == 1), (event_id, written)
