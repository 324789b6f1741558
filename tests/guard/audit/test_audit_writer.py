"""Group commit: concurrent events share transactions, all arrive, the chain holds."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from guard import AuditUnavailableError
from guard.audit import (
    AuditEvent,
    AuditTrail,
    Checkpoint,
    load_public_key,
    load_signing_key,
    open_store,
    verify,
)
from guard.audit._schema import Row
from guard.audit._store import Store
from guard.audit._writer import GroupCommitWriter
from tests.guard.audit.conftest import CHAIN_KEY, Keys, decision_event, make_trail


class CountingStore:
    """A real store that counts its transactions and notes the events each carried."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.transactions = 0
        self.batches: list[int] = []  # events per transaction that carried any

    def write(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        self.inner.write(rows, checkpoints)
        self.transactions += 1
        if rows:
            self.batches.append(len(rows))

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
    report = verify(reader, load_public_key(keys.public), chain_key=CHAIN_KEY)
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
    report = verify(reader, load_public_key(keys.public), chain_key=CHAIN_KEY)
    reader.close()
    assert report.events == 2
    assert report.ok, report.problems
    # The abandoned chain was closed once the store took writes again: nothing is unsigned.
    assert report.notes == ()


def test_record_after_close_is_refused(tmp_path: Path, keys: Keys) -> None:
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys)
    trail.close()
    with pytest.raises(AuditUnavailableError):
        trail.record(decision_event())


class GatedStore(CountingStore):
    """A real store whose writes wait for a gate, and which notes the writing threads."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def write(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(10)
        super().write(rows, checkpoints)


def _stored(url: str) -> list[tuple[str, int]]:
    reader = open_store(url, create=False)
    try:
        return [(r[0], r[1]) for r in reader.rows(
            "SELECT event_id, seq FROM audit_event ORDER BY seq")]
    finally:
        reader.close()


def test_a_lone_writer_commits_on_its_own_thread(tmp_path: Path, keys: Keys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = GatedStore(open_store(url))
    writer = GroupCommitWriter(store, writer_id="w", signing_key=load_signing_key(keys.signing))
    for _ in range(3):
        writer.submit(decision_event())
    writer.close()
    me = threading.current_thread().name
    assert store.threads[:3] == [me, me, me]  # no hand-off to the writer thread
    assert store.threads[3:] == ["audit-writer-w"]  # the closing checkpoint
    assert [seq for _, seq in _stored(url)] == [1, 2, 3]


def test_a_waiter_that_gives_up_still_has_its_event_written(
    tmp_path: Path, keys: Keys
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = GatedStore(open_store(url))
    writer = GroupCommitWriter(store, writer_id="w", signing_key=load_signing_key(keys.signing))
    store.gate.clear()
    first, second = decision_event(), decision_event()
    leader = threading.Thread(target=writer.submit, args=(first,))
    leader.start()
    assert store.entered.wait(10)  # the leader is inside the (held) commit
    with pytest.raises(AuditUnavailableError, match="did not confirm"):
        writer.submit(second, timeout=0.1)
    store.gate.set()
    leader.join(10)
    writer.flush()
    writer.close()
    assert _stored(url) == [(first.event_id, 1), (second.event_id, 2)]
    report_store = open_store(url, create=False)
    report = verify(report_store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    report_store.close()
    assert report.ok, report.problems


@pytest.mark.parametrize(("queued", "batches"), [(20, [20]), (33, [32, 1]), (64, [32, 32]),
                                                 (100, [50, 50])])
def test_a_long_queue_is_committed_in_two_halves(
    tmp_path: Path, keys: Keys, queued: int, batches: list[int]
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = GatedStore(open_store(url))
    writer = GroupCommitWriter(store, writer_id="w", signing_key=load_signing_key(keys.signing))
    store.gate.clear()
    first = decision_event()
    leader = threading.Thread(target=writer.submit, args=(first,))
    leader.start()
    assert store.entered.wait(10)  # the leader holds the turn, inside its commit
    events = [decision_event(subject_id=str(i)) for i in range(queued)]
    for event in events:
        writer.post(event)
    store.gate.set()
    leader.join(10)
    writer.flush()
    writer.close()
    assert store.batches == [1, *batches]
    assert [e for e, _ in _stored(url)] == [first.event_id, *(e.event_id for e in events)]


def test_waiters_behind_one_that_gave_up_are_still_woken(tmp_path: Path, keys: Keys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = GatedStore(open_store(url))
    writer = GroupCommitWriter(store, writer_id="w", signing_key=load_signing_key(keys.signing))
    store.gate.clear()
    first, quitter = decision_event(), decision_event()
    leader = threading.Thread(target=writer.submit, args=(first,))
    leader.start()
    assert store.entered.wait(10)
    with pytest.raises(AuditUnavailableError, match="did not confirm"):
        writer.submit(quitter, timeout=0.1)  # first in the next batch, so first to be woken
    later = [decision_event() for _ in range(3)]
    woken: list[str] = []

    def wait_for(event: AuditEvent) -> None:
        writer.submit(event)  # blocks up to 30 s unless someone wakes it
        woken.append(event.event_id)

    threads = [threading.Thread(target=wait_for, args=(event,)) for event in later]
    for t in threads:
        t.start()
    while writer._queued < 5:  # all three are queued behind the quitter
        time.sleep(0.001)
    store.gate.set()
    leader.join(10)
    deadline = time.monotonic() + 10
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads)  # woken, not left to their 30 s timeout
    writer.close()
    assert sorted(woken) == sorted(e.event_id for e in later)
    assert [seq for _, seq in _stored(url)] == [1, 2, 3, 4, 5]


def test_posted_events_are_committed_in_order_and_flush_waits_for_them(
    store_url: str, keys: Keys
) -> None:
    trail = make_trail(store_url, keys, checkpoint_every=50)
    events = [decision_event(subject_id=str(i)) for i in range(120)]
    for event in events:
        trail.post(event)
    trail.flush()
    assert [e for e, _ in _stored(store_url)] == [e.event_id for e in events]
    trail.close()
    with pytest.raises(AuditUnavailableError):
        trail.post(decision_event())
    reader = open_store(store_url, create=False)
    report = verify(reader, load_public_key(keys.public), chain_key=CHAIN_KEY)
    reader.close()
    assert report.ok, report.problems
    assert report.notes == ()


def test_a_posted_event_that_cannot_be_written_is_logged(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = AuditTrail(open_store(url, timeout=0.05), load_signing_key(keys.signing))
    locker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    lost = decision_event()
    with caplog.at_level("ERROR", logger="guard.audit"):
        trail.post(lost)
        trail.flush()
    locker.execute("ROLLBACK")
    trail.close()
    assert any(lost.event_id in r.getMessage() and "not recorded" in r.getMessage()
               for r in caplog.records)
    assert _stored(url) == []


def test_threads_coroutines_and_posts_share_one_chain(store_url: str, keys: Keys) -> None:
    store = CountingStore(open_store(store_url))
    trail = AuditTrail(store, load_signing_key(keys.signing), checkpoint_every=64)
    ids: list[str] = []
    lock = threading.Lock()

    def threads(n: int) -> None:
        for i in range(25):
            event = decision_event(subject_id=f"t{n}-{i}")
            trail.record(event) if i % 2 else trail.post(event)
            with lock:
                ids.append(event.event_id)

    async def coroutines() -> None:
        events = [decision_event(subject_id=f"a{i}") for i in range(100)]
        await asyncio.gather(*(trail.arecord(e) for e in events))
        with lock:
            ids.extend(e.event_id for e in events)

    workers = [threading.Thread(target=threads, args=(n,)) for n in range(6)]
    for t in workers:
        t.start()
    asyncio.run(coroutines())
    for t in workers:
        t.join()
    trail.close()
    stored = _stored(store_url)
    assert sorted(e for e, _ in stored) == sorted(ids)
    assert [s for _, s in stored] == list(range(1, len(ids) + 1))
    assert store.transactions < len(ids)
    reader = open_store(store_url, create=False)
    report = verify(reader, load_public_key(keys.public), chain_key=CHAIN_KEY)
    reader.close()
    assert report.ok, report.problems
    assert report.notes == ()


def test_posted_events_ride_along_with_the_next_awaited_commit(
    tmp_path: Path, keys: Keys
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = CountingStore(open_store(url))
    writer = GroupCommitWriter(store, writer_id="w", signing_key=load_signing_key(keys.signing),
                               post_delay=60.0)
    posted, awaited = decision_event(), decision_event()
    writer.post(posted)
    assert store.transactions == 0  # waits for company (up to post_delay)
    writer.submit(awaited)
    assert store.transactions == 1
    assert _stored(url) == [(posted.event_id, 1), (awaited.event_id, 2)]
    writer.close()


def test_record_many_commits_in_order_and_reports_each_event(
    tmp_path: Path, keys: Keys
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = CountingStore(open_store(url, timeout=0.05))
    trail = AuditTrail(store, load_signing_key(keys.signing))
    events = [decision_event(subject_id=f"s{i}") for i in range(5)]
    assert trail.record_many(events) == [None] * 5
    assert store.transactions == 1  # one transaction for the five (its open checkpoint too)
    assert trail.record_many([]) == []
    locker = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    errors = trail.record_many([decision_event(), decision_event()])
    assert all(isinstance(e, AuditUnavailableError) for e in errors)
    locker.execute("ROLLBACK")
    trail.close()
    assert [event_id for event_id, _ in _stored(url)] == [e.event_id for e in events]


def test_an_unrecordable_event_fails_its_producer_alone(tmp_path: Path, keys: Keys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = make_trail(url, keys)
    bad = dataclasses.replace(decision_event(), categories=(object(),))  # type: ignore[arg-type]
    with pytest.raises(AuditUnavailableError, match="cannot be recorded"):
        trail.record(bad)
    good = decision_event()
    trail.record(good)
    writer_id = trail.writer_id
    trail.close()
    assert _stored(url) == [(good.event_id, 1)]
    assert writer_id == trail.writer_id  # the chain did not have to start over
