"""A committed batch wakes its event loop once, and that one callback resumes every waiter.

The loop's eventfd callback resolves the batch's futures and runs what waits on
them there (the awaiting tasks' wake-ups), instead of leaving asyncio to schedule
a handle per future for the loop's next turn. A callback that fails goes to the
loop's exception handler, as from a handle, and the other waiters still resume.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from guard.audit import EventKind
from guard.audit._journal import Journal
from tests.guard.audit.conftest import Keys
from tests.guard.audit.test_audit_writer import FIELDS, Held, writer

WAITERS = 32


def test_a_batchs_waiters_resume_inside_the_callback_that_settles_it(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    held = Held(journal)
    w = writer(keys, held)
    resumed: list[str] = []
    settled: list[tuple[int, int]] = []  # per callback: entries done before it, tasks resumed in it

    async def one() -> None:
        resumed.append(await w.start(EventKind.DECISION, FIELDS))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        await w.start(EventKind.DECISION, FIELDS)  # the loop's waker made; the chain opened
        held.go.clear()
        held.waiting.clear()
        tasks = [asyncio.ensure_future(one()) for _ in range(WAITERS)]
        for _ in range(30_000):  # until the writer holds a batch and every task waits
            if held.waiting.is_set() and len(w._queue) + len(w._inflight or ()) >= WAITERS:
                break
            await asyncio.sleep(0.001)
        waker = w._wakers[loop]
        settle = waker.settle

        def watched() -> None:
            before, done = len(resumed), len(waker.done)
            settle()
            settled.append((done, len(resumed) - before))

        loop.remove_reader(waker.fd)
        loop.add_reader(waker.fd, watched)
        held.go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    held.go.set()
    try:
        asyncio.run(run())
    finally:
        w.close()
        journal.close()
    assert len(set(resumed)) == WAITERS
    assert sum(done for done, _ in settled) >= 1
    # (the writer may add a batch while a callback runs: it settles that one too)
    assert all(in_it >= done for done, in_it in settled), settled


def test_a_failing_done_callback_goes_to_the_loops_handler_and_the_others_resume(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    held = Held(journal)
    w = writer(keys, held)
    handled: list[dict[str, Any]] = []

    def boom(_future: asyncio.Future[str]) -> None:
        raise RuntimeError("a done callback that fails")

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: handled.append(context))
        await w.start(EventKind.DECISION, FIELDS)
        held.go.clear()
        futures = [w.start(EventKind.DECISION, FIELDS) for _ in range(WAITERS)]
        futures[3].add_done_callback(boom)
        held.go.set()
        return await asyncio.wait_for(asyncio.gather(*futures), 30)

    held.go.set()
    try:
        ids = asyncio.run(run())
    finally:
        w.close()
        journal.close()
    assert len(set(ids)) == WAITERS
    assert [str(c["exception"]) for c in handled] == ["a done callback that fails"]
