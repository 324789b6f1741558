"""Group commit: concurrent events share transactions, all arrive, the chain holds."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from guard import AuditUnavailableError
from guard.audit import (
    AuditTrail,
    Checkpoint,
    load_public_key,
    load_signing_key,
    open_store,
    verify,
)
from guard.audit._schema import Row
from guard.audit._store import Store
from tests.guard.audit.conftest import Keys, decision_event, make_trail


class CountingStore:
    """A real store that counts its transactions."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url, self.dialect = inner.url, inner.dialect
        self.transactions = 0

    def write(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        self.inner.write(rows, checkpoints)
        self.transactions += 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_concurrent_events_share_commits_and_all_arrive(store_url: str, keys: Keys) -> None:
    store = CountingStore(open_store(store_url))
    trail = AuditTrail(store, load_signing_key(keys.signing), checkpoint_every=100)
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(40):
            event = decision_event(subject_id=f"s{n}-{i}")
            trail.record(event)
            with lock:
                ids.append(event.event_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trail.close()
    assert store.transactions < len(ids)  # events shared transactions
    reader = open_store(store_url, create=False)
    stored = {r[0] for r in reader.rows("SELECT event_id FROM audit_event")}
    seqs = [r[0] for r in reader.rows("SELECT seq FROM audit_event ORDER BY seq")]
    report = verify(reader, load_public_key(keys.public))
    reader.close()
    assert stored == set(ids)
    assert seqs == list(range(1, len(ids) + 1))
    assert report.ok, report.problems
    assert report.notes == ()  # closed: the closing checkpoint covers every event
    assert report.checkpoints >= 2 + len(ids) // 200  # open, periodic (every ~100), close


def test_arecord_does_not_block_the_event_loop(tmp_path: Path, keys: Keys) -> None:
    """The store is locked; only a coroutine on the same loop can unlock it."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = make_trail(url, keys)
    locker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")

    async def unlock_soon() -> None:
        await asyncio.sleep(0.2)
        locker.execute("ROLLBACK")

    async def main() -> None:
        events = [decision_event(subject_id=str(i)) for i in range(50)]
        await asyncio.wait_for(
            asyncio.gather(unlock_soon(), *(trail.arecord(e) for e in events)), timeout=20
        )

    asyncio.run(main())
    trail.close()
    reader = open_store(url, create=False)
    assert reader.rows("SELECT count(*) FROM audit_event")[0][0] == 50
    reader.close()


def test_a_store_that_refuses_fails_the_record_and_starts_a_new_chain(
    tmp_path: Path, keys: Keys
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = AuditTrail(open_store(url, timeout=0.05), load_signing_key(keys.signing))
    trail.record(decision_event())
    first_chain = trail.writer_id
    locker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(AuditUnavailableError):
        trail.record(decision_event())
    assert trail.ready()[0] is False
    locker.execute("ROLLBACK")
    trail.record(decision_event())
    assert trail.writer_id != first_chain
    trail.close()
    reader = open_store(url, create=False)
    report = verify(reader, load_public_key(keys.public))
    reader.close()
    assert report.events == 2
    assert report.ok, report.problems
    assert len(report.notes) == 1  # the first chain ended without its closing checkpoint


def test_record_after_close_is_refused(tmp_path: Path, keys: Keys) -> None:
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys)
    trail.close()
    with pytest.raises(AuditUnavailableError):
        trail.record(decision_event())
