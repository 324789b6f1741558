"""The writer's batch bookkeeping: checkpoints at the exact event, the stretch's start, results.

Batches mix events that can be recorded with events that cannot (an integer no store
holds): only those fail, the chain skips them, a periodic checkpoint falls on every
``every``-th event written, and the unsigned stretch the writer carries over starts at
the first event after the last checkpoint.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import EventKind, load_signing_key
from guard.audit._checkpoint import CheckpointKind
from guard.audit._event import ts_epoch
from guard.audit._fields import ChainKey
from guard.audit._journal import Journal, read_journal
from guard.audit._jwriter import JournalWriter
from guard.audit._schema import row_checkpoint
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys
from tests.guard.audit.test_audit_writer import FIELDS, Held, writer

BAD = {"latency_us": 2**70}  # outside the signed 64-bit range: not recordable


def _fields(good: bool, n: int) -> dict[str, Any]:
    """Event ``n`` of a run, with a time of its own (a batch's events otherwise share one)."""
    return {**FIELDS, **({} if good else BAD), "ts": f"2026-12-01T00:{n // 60:02d}:{n % 60:02d}Z"}


async def _on_loop(w: JournalWriter, many: list[dict[str, Any]]) -> list[str | None]:
    """The events handed by one coroutine each on this loop; per event its id or None."""
    futures = [w.start(EventKind.DECISION, fields) for fields in many]
    done = await asyncio.gather(*futures, return_exceptions=True)
    return [d if isinstance(d, str) else None for d in done]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(every=st.integers(1, 5),
       batches=st.lists(st.tuples(st.booleans(), st.lists(st.booleans(), min_size=1,
                                                           max_size=9)),
                        min_size=1, max_size=6))
def test_checkpoints_fall_on_every_nth_event_written_whatever_fails_beside_it(
    every: int, batches: list[tuple[bool, list[bool]]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        keys = Keys(Path(tmp) / "sign.key", Path(tmp) / "sign.key.pub")
        load_signing_key(keys.signing, create=True)
        journal = Journal(Path(tmp) / "j")
        w = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                          writer_id="test", chain_key=ChainKey(CHAIN_KEY),
                          checkpoint_every=every, checkpoint_interval=1e9)  # (no timer)
        n = 0
        for on_loop, batch in batches:
            many = [_fields(good, n + i) for i, good in enumerate(batch)]
            n += len(batch)
            got = (asyncio.run(_on_loop(w, many)) if on_loop
                   else w.results(EventKind.DECISION, many))
            assert [isinstance(g, str) for g in got] == batch
        w.flush()
        unsigned, since = w._unsigned, w._unsigned_since
        w.close()
        journal.close()
        events, periodic = [], []
        for record in read_journal(journal.folder):
            assert isinstance(record, tuple)
            value = orjson.loads(record[1])
            if isinstance(value, list):
                events.append(value)
            elif row_checkpoint(value["checkpoint"]).kind == CheckpointKind.PERIODIC:
                periodic.append(row_checkpoint(value["checkpoint"]).seq)
    written = sum(sum(batch) for _, batch in batches)
    assert [e[24] for e in events] == list(range(1, written + 1))  # the chain skips failures
    assert periodic == list(range(every, written + 1, every))
    assert unsigned == written % every
    if unsigned:  # the stretch carried over starts at the first event after the last checkpoint
        assert since == ts_epoch(events[written - unsigned][2])


def test_a_batch_of_two_loops_events_is_settled_by_each_loop_for_its_own(
    keys: Keys, tmp_path: Path
) -> None:
    """Each loop resolves only its own futures (a loop in debug mode refuses another's)."""
    journal = Journal(tmp_path / "j")
    held = Held(journal)
    w = writer(keys, held)
    appends = held.append
    batches: list[int] = []
    held.append = lambda payloads: (batches.append(len(payloads)), appends(payloads))[1]  # type: ignore[method-assign]
    w.post(EventKind.DECISION, FIELDS)  # the writer is held in its append meanwhile
    assert held.waiting.wait(10)
    queued = threading.Barrier(3)
    ids: list[str] = []
    errors: list[object] = []

    async def one() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, c: errors.append(c))
        future = w.start(EventKind.DECISION, FIELDS)
        queued.wait(10)
        ids.append(await asyncio.wait_for(future, 10))

    loops = [threading.Thread(target=asyncio.run, args=(one(),), kwargs={"debug": True})
             for _ in range(2)]
    for loop in loops:
        loop.start()
    queued.wait(10)  # both events queued behind the held batch: the next batch holds both
    held.go.set()
    for loop in loops:
        loop.join(30)
    w.close()
    journal.close()
    assert errors == []
    assert len(ids) == 2
    assert batches[:2] == [2, 2]  # the opening checkpoint and the post; the two loops' events
