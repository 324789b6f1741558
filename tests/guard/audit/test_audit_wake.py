"""The writer's hand-over to event loops: an eventfd per loop, written once per batch.

Producers on several event loops (each in its own thread), threads and posts
interleave freely; every coroutine is answered through its own loop's eventfd,
a writer that dies fails the waiters of every loop at once, a loop closed while
its batch is in flight neither hangs the writer nor stops it serving the
others, and the eventfds of finished loops are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, load_public_key, open_store
from guard.audit._journal import Journal, read_journal
from guard.audit._jverify import verify_journal
from guard.audit._jwriter import JournalWriter
from tests.guard.audit.conftest import CHAIN_KEY, Keys
from tests.guard.audit.test_audit_writer import FIELDS, Dying, Held, writer

Producer = tuple[str, int, int]
"""How one producer commits: ``loop`` (a coroutine on one of two loops), ``thread``
(``submit``) or ``post``; how many events; a pause every this many (0: none)."""


def _journal_events(keys: Keys, folder: Path) -> int:
    store = open_store(f"sqlite:///{folder.parent / 'index.db'}")
    try:
        report = verify_journal(store, folder, load_public_key(keys.public), chain_key=CHAIN_KEY)
    finally:
        store.close()
    assert report.journal.ok, report.journal.problems
    return report.journal.events


def _on_loops(w: JournalWriter, plan: list[Producer], loops: int) -> list[str]:
    """Run the plan's coroutines spread over ``loops`` event loops (a thread each); their ids."""
    ids: list[str] = []

    async def one(count: int, every: int) -> None:
        for i in range(count):
            if every and i % every == 0:
                await asyncio.sleep(0.001)  # the writer may fall asleep meanwhile
            ids.append(await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 10))

    async def run(mine: list[Producer]) -> None:
        await asyncio.gather(*(one(count, every) for _, count, every in mine))

    threads = [threading.Thread(target=asyncio.run, args=(run(plan[n::loops]),))
               for n in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return ids


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                             HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["loop", "loop", "thread", "post"]),
                          st.integers(1, 25), st.integers(0, 5)), min_size=1, max_size=8))
def test_producers_on_several_loops_threads_and_posts_are_all_answered_once(
    keys: Keys, plan: list[Producer]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "j"
        journal = Journal(folder)
        w = writer(keys, journal)
        submitted: list[str] = []

        def thread(count: int, every: int) -> None:
            for i in range(count):
                if every and i % every == 0:
                    threading.Event().wait(0.001)
                submitted.append(w.submit(EventKind.DECISION, FIELDS, timeout=30))

        others = [threading.Thread(target=thread, args=(count, every))
                  for kind, count, every in plan if kind == "thread"]
        for kind, count, _ in plan:
            if kind == "post":
                for _ in range(count):
                    w.post(EventKind.OUTCOME, {"decision_ref": "d", "http_status": 200})
        for other in others:
            other.start()
        answered = _on_loops(w, [p for p in plan if p[0] == "loop"], 2)
        for other in others:
            other.join(60)
        w.close()
        journal.close()
        coroutines = sum(count for kind, count, _ in plan if kind == "loop")
        assert len(answered) == coroutines
        assert len(submitted) == sum(count for kind, count, _ in plan if kind == "thread")
        assert len(set(answered + submitted)) == len(answered) + len(submitted)
        assert _journal_events(keys, folder) == sum(count for _, count, _ in plan)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_that_dies_mid_batch_fails_the_coroutines_of_every_loop_at_once(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    Dying.gate.clear()
    Dying.taken.clear()
    w = writer(keys, journal, Dying)
    queued = threading.Barrier(3)
    failures: list[str] = []

    async def commit(first: bool) -> None:
        future = w.start(EventKind.DECISION, FIELDS)
        if first:  # in flight: the writer holds it in its batch
            assert Dying.taken.wait(30)
        queued.wait(30)
        with pytest.raises(AuditUnavailableError) as failed:
            await asyncio.wait_for(future, 10)
        failures.append(str(failed.value))

    threads = [threading.Thread(target=asyncio.run, args=(commit(n == 0),)) for n in range(2)]
    threads[0].start()
    assert Dying.taken.wait(30)
    threads[1].start()  # queued behind the batch in flight, from another loop
    queued.wait(30)
    Dying.gate.set()
    for thread in threads:
        thread.join(30)
    assert failures == ["the audit writer stopped"] * 2
    w._thread.join(30)
    journal.close()


def test_a_loop_closed_while_its_batch_is_in_flight_leaves_the_writer_serving(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    held = Held(journal)
    w = writer(keys, held)
    loop = asyncio.new_event_loop()

    async def queue() -> asyncio.Future[str]:
        return w.start(EventKind.DECISION, FIELDS)

    orphan = loop.run_until_complete(queue())
    orphan_fd = w._wakers[loop].fd
    assert held.waiting.wait(30)  # its batch is in the writer's append
    loop.close()  # nobody will read this loop's eventfd again
    answered: list[str] = []

    async def commit() -> None:
        answered.append(await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 10))

    other = threading.Thread(target=asyncio.run, args=(commit(),))
    other.start()  # another loop's event, queued behind the batch in flight
    for _ in range(30_000):
        if w._queue:
            break
        threading.Event().wait(0.001)
    held.go.set()
    other.join(30)
    [event_id] = answered
    # the closed loop's eventfd was not closed under the writer (its number given to another)
    assert orphan_fd not in {waker.fd for waker in w._wakers.values()}
    assert w.alive
    assert not w.failures.failing
    assert not orphan.done()  # its loop is gone: no one resolved it, and no one hung
    w.close()
    journal.close()
    written = b"".join(payload for _, payload in read_journal(tmp_path / "j"))
    assert event_id.encode() in written
    assert _journal_events(keys, tmp_path / "j") == 2


def _eventfds() -> int:
    folder = Path("/proc/self/fd")
    count = 0
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):  # closed while listed (the listing's own descriptor)
            count += os.readlink(entry) == "anon_inode:[eventfd]"
    return count


def test_the_eventfds_of_finished_loops_are_closed(keys: Keys, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    w = writer(keys, journal)

    async def commit() -> Any:
        return await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 30)

    gc.collect()
    before = _eventfds()
    for _ in range(40):  # a loop each
        asyncio.run(commit())
    gc.collect()
    assert _eventfds() - before <= 1  # the last loop's, until another loop or the end
    w.close()
    gc.collect()
    assert _eventfds() <= before
    journal.close()


def test_loops_on_many_threads_making_their_wakers_at_once_are_all_answered(
    keys: Keys, tmp_path: Path
) -> None:
    """Each new loop's waker is made, and closed loops' forgotten, while other threads do too."""
    journal = Journal(tmp_path / "j")
    w = writer(keys, journal)
    errors: list[BaseException] = []
    answered: list[str] = []
    go = threading.Barrier(8)

    async def commit() -> None:
        answered.append(await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 30))

    def loops() -> None:
        go.wait()
        for _ in range(25):  # a fresh loop each time: each makes its waker
            try:
                asyncio.run(commit())
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch inside the writer's bookkeeping
    try:
        threads = [threading.Thread(target=loops) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        sys.setswitchinterval(interval)
    w.close()
    journal.close()
    assert errors == []
    assert len(answered) == len(set(answered)) == 8 * 25
