"""The commit deadline watch holds only commits in flight, not those already durable.

Kept until the watch's next tick (up to a second), every durable request's future,
refusal callback and event fields lived long enough for the cyclic collector to
promote them into its oldest generation, so its full collections came sooner and
stalled every request (docs/performance.md, "p99 at one connection").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from guard._guard import Deadlines, Handed, Watched
from tests.guard.test_guard_commit import ALLOWED, _guard


def test_a_done_future_is_forgotten_when_the_next_is_watched() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        deadlines = Deadlines(loop)
        futures = [loop.create_future() for _ in range(50)]
        for future in futures:  # no await in between: the watch's timer cannot run
            deadlines.watch(Watched(future), 30.0)
            future.set_result("id")
        assert [entry.future for entry in deadlines._pending] == [futures[-1]]

    asyncio.run(run())


def test_a_future_not_done_is_still_watched_and_fails_at_its_deadline() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        expired: list[dict[str, str]] = []
        deadlines = Deadlines(loop, expired.append)

        def entry(name: str) -> Handed:  # a decision's fields, its commit's future on them
            handed = Handed(name=name)
            handed.future = loop.create_future()
            return handed

        slow = entry("slow")
        deadlines.watch(slow, 0.05)
        for _ in range(5):  # done futures behind it wait their turn; the slow one stays
            done = entry("done")
            deadlines.watch(done, 0.05)
            done.future.set_result("id")  # type: ignore[union-attr]
        bare = Watched(loop.create_future())
        deadlines.watch(bare, 0.05)  # no fields: it fails, nothing is called for it
        assert deadlines._pending[0] is slow
        for future in (slow.future, bare.future):
            assert future is not None
            with pytest.raises(TimeoutError, match="audit event not durable in time"):
                await asyncio.wait_for(asyncio.shield(future), 30)
        assert expired == [{"name": "slow"}]
        assert expired[0] is slow

    asyncio.run(run())


def test_sequential_commits_leave_one_entry_in_the_watch(tmp_path: Path) -> None:
    guard = _guard(tmp_path)

    async def run() -> int:
        for _ in range(40):
            assert await guard.begin_commit(guard.decide(ALLOWED), 200)
        assert guard._deadlines is not None
        return len(guard._deadlines._pending)

    try:
        assert asyncio.run(run()) <= 1
    finally:
        guard.close()
