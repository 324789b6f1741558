"""The journal writer's hand-over: coroutines queue without the lock; no waiter is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, load_public_key, load_signing_key, open_store, pseudonymise
from guard.audit._fields import ChainKey, Pseudonyms
from guard.audit._ids import new_event_ids
from guard.audit._journal import Journal
from guard.audit._jverify import verify_journal
from guard.audit._jwriter import JournalWriter, _Item
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys

FIELDS: dict[str, Any] = {"caller": "svc:crm", "purpose": "billing", "action": "read",
                          "allowed": True, "reason": "allowed", "subject_id": "customer-1"}


class Die(BaseException):
    """Escapes the writer loop's ``except Exception``: its thread ends."""


class Dying(JournalWriter):
    """A writer whose first batch waits for ``gate`` and then kills its thread."""

    gate = threading.Event()
    taken = threading.Event()

    def _commit(self, items: list[_Item]) -> None:
        self.taken.set()
        self.gate.wait(30)
        raise Die


def writer(keys: Keys, journal: Any, cls: type[JournalWriter] = JournalWriter) -> JournalWriter:
    return cls(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
               writer_id="test", chain_key=ChainKey(CHAIN_KEY))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_whose_thread_dies_fails_every_waiter_at_once(keys: Keys, tmp_path: Path
                                                               ) -> None:
    journal = Journal(tmp_path / "j")
    asyncio.run(dies(writer(keys, journal, Dying)))
    journal.close()


async def dies(w: JournalWriter) -> None:
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            w.submit(EventKind.DECISION, FIELDS, timeout=10)
        except AuditUnavailableError as exc:
            errors.append(exc)

    first = threading.Thread(target=submit)
    first.start()
    assert Dying.taken.wait(30)  # the first event is in flight
    queued = w.start(EventKind.DECISION, FIELDS)  # a coroutine's, queued behind it
    second = threading.Thread(target=submit)
    second.start()
    for _ in range(30_000):  # until both waiters are queued
        if len(w._queue) >= 2:
            break
        await asyncio.sleep(0.001)
    Dying.gate.set()
    with pytest.raises(AuditUnavailableError, match="writer stopped"):
        await asyncio.wait_for(queued, 10)
    for thread in (first, second):
        thread.join(30)
    assert [str(e) for e in errors] == ["the audit writer stopped"] * 2
    with pytest.raises(AuditUnavailableError, match="closed"):
        w.start(EventKind.DECISION, FIELDS)
    w._thread.join(30)  # its exception is reported within this test (and filtered)


def test_coroutines_that_queue_while_the_writer_works_or_waits_are_all_durable(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    w = writer(keys, journal)

    async def one(n: int) -> list[str]:
        ids = []
        for i in range(60):
            if (n + i) % 7 == 0:  # let the writer go idle now and then
                await asyncio.sleep(0.002)
            ids.append(await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 30))
        return ids

    async def every() -> list[list[str]]:
        return await asyncio.gather(*(one(n) for n in range(32)))

    got = [i for ids in asyncio.run(every()) for i in ids]
    assert len(set(got)) == 32 * 60
    w.close()
    journal.close()
    store = open_store(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        report = verify_journal(store, tmp_path / "j", load_public_key(keys.public),
                                chain_key=CHAIN_KEY)
    finally:
        store.close()
    assert report.journal.ok, report.journal.problems
    assert report.journal.events == 32 * 60


def test_a_coroutine_that_queues_while_the_writer_closes_is_answered(keys: Keys, tmp_path: Path
                                                                      ) -> None:
    journal = Journal(tmp_path / "j")
    asyncio.run(closes(writer(keys, journal)))
    journal.close()


async def closes(w: JournalWriter) -> None:
    futures: list[asyncio.Future[str]] = []
    closer = threading.Thread(target=w.close)
    for i in range(2000):
        if i == 200:
            closer.start()
        try:
            futures.append(w.start(EventKind.DECISION, FIELDS))
        except AuditUnavailableError:
            break
        if i % 50 == 0:
            await asyncio.sleep(0)
    closer.join(30)
    for future in futures:  # each is durable or failed; none is left waiting
        with contextlib.suppress(AuditUnavailableError):
            await asyncio.wait_for(future, 10)


def test_pseudonyms_stay_right_past_the_bound_of_those_kept() -> None:
    pseudonyms = Pseudonyms(HMAC_KEY)
    subjects = [f"customer-{n}" for n in range(5000)] * 2
    assert [pseudonyms(s) for s in subjects] == [pseudonymise(HMAC_KEY, s) for s in subjects]


@given(key=st.binary(min_size=1, max_size=130), data=st.binary(max_size=300))
def test_the_chain_key_is_hmac_sha256(key: bytes, data: bytes) -> None:
    assert ChainKey(key).digest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()


def test_batch_ids_are_rfc_9562_version_7_with_62_random_bits() -> None:
    ids = new_event_ids(4000)
    assert {(uuid.UUID(i).version, uuid.UUID(i).variant) for i in ids} == {(7, uuid.RFC_4122)}
    assert {i[19] for i in ids} == set("89ab")  # the variant digit's two random bits
    assert len({i[20:] for i in ids}) == len(ids)


class Held:
    """A journal whose appends wait until the test lets them go."""

    def __init__(self, journal: Journal) -> None:
        self.journal, self.go, self.waiting = journal, threading.Event(), threading.Event()

    def append(self, payloads: Any) -> int:
        self.waiting.set()
        self.go.wait(30)
        return self.journal.append(payloads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)


def test_a_burst_of_events_wakes_an_idle_writer_once_and_a_busy_one_never(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    held = Held(journal)
    w = writer(keys, held)
    notified: list[int] = []
    ring = w._ring
    w._ring = lambda: (notified.append(1), ring())[1]  # type: ignore[method-assign]

    async def burst() -> list[asyncio.Future[str]]:
        return [w.start(EventKind.DECISION, FIELDS) for _ in range(50)]

    async def run() -> None:
        for _ in range(30_000):  # until the writer waits for work
            if w._idle:
                break
            await asyncio.sleep(0.001)
        first = await burst()  # the writer is idle: one wake-up
        assert held.waiting.wait(30)
        woken = len(notified)
        second = await burst()  # the writer is busy appending: none
        assert len(notified) == woken == 1
        held.go.set()
        ids = await asyncio.wait_for(asyncio.gather(*first, *second), 30)
        assert len(set(ids)) == 100

    asyncio.run(run())
    w.close()
    journal.close()
