"""The journal writer's CPU per event, and what a producer on an event loop pays per event.

``build``: the writer's own work per event (row, pseudonym, id, chain link and
hash, record bytes, checkpoints) on batches of ``--batch`` events, with a
journal that keeps nothing (no disk): CPU µs per event, median of ``--rounds``.
``loop``: ``--producers`` coroutines on one event loop each commit events one
after the other (``JournalWriter.start``, as ``Guard.acommit`` does) into a real
journal: CPU µs per event of the event loop's thread and of the writer thread,
and the wake-ups per event of the event loop and of the writer (``--null-journal``:
no disk, for instruction counts of the hand-over).

Usage: python bench/writer.py [--events N] [--rounds 3] [--batch 64] [--producers 32]
       [--only build|loop]
(under callgrind: valgrind --tool=callgrind python bench/writer.py --only build)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _pg import fdatasync_floor
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import EventKind, derive_chain_key
from guard.audit._journal import open_lane
from guard.audit._jwriter import JournalWriter

KEY = b"b" * 32
FIELDS: dict[str, Any] = {
    "caller": "svc:crm", "party_type": "internal", "country": "GB",
    "purpose": "relationship.management", "categories": ("contact.email",), "action": "read",
    "allowed": True, "reason": "allowed", "rule": ("rules.csv:1",),
    "lawful_basis": ("contract",), "policy_version": "sha256:" + "a" * 64,
    "subject_id": "customer-42", "http_method": "GET", "http_route": "/customers/{id}",
    "http_status": 200, "latency_us": 12, "trace_id": "1" * 32, "span_id": "2" * 16,
}


class NullJournal:
    """Takes appends and keeps nothing."""

    next_offset = 0

    def append(self, payloads: Sequence[bytes]) -> int:
        """Count the records."""
        self.next_offset += len(payloads)
        return self.next_offset


def thread_cpu_us(thread: threading.Thread) -> float:
    """CPU time a thread of this process has used so far, in µs (Linux schedstat)."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1000


def writer(journal: Any) -> JournalWriter:
    """A keyed writer on ``journal`` (a checkpoint every 1,000 events, as by default)."""
    return JournalWriter(journal, hmac_key=KEY, signing_key=Ed25519PrivateKey.generate(),
                         writer_id="bench", chain_key=_chain_key())


def _chain_key() -> Any:
    from guard.audit._fields import ChainKey

    return ChainKey(derive_chain_key(KEY))


def build(events: int, batch: int) -> float:
    """The writer's CPU µs per event, batches of ``batch`` built on this thread."""
    w = writer(NullJournal())
    w.close()
    from guard.audit._jwriter import _Item

    w._opened = True
    c0 = time.thread_time()
    for _ in range(events // batch):
        w._commit([_Item(EventKind.DECISION, FIELDS) for _ in range(batch)])
    return (time.thread_time() - c0) * 1e6 / (events // batch * batch)


def loop(events: int, producers: int, null: bool = False) -> tuple[float, float, float, float]:
    """CPU µs per event of the event loop's and the writer's thread; wake-ups per event of
    the loop (``call_soon_threadsafe``) and of the writer (``notify``)."""
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        journal = NullJournal() if null else open_lane(Path(tmp))
        w = writer(journal)
        per = events // producers
        wakeups = notified = 0
        notify = w._cond.notify

        def counted_notify(n: int = 1) -> None:
            nonlocal notified
            notified += 1
            notify(n)

        w._cond.notify = counted_notify  # type: ignore[method-assign]

        async def one() -> None:
            for _ in range(per):
                await w.start(EventKind.DECISION, FIELDS)

        async def main() -> float:
            nonlocal wakeups
            aloop = asyncio.get_running_loop()
            original = aloop.call_soon_threadsafe

            def counted(*args: Any, **kwargs: Any) -> Any:
                nonlocal wakeups
                wakeups += 1
                return original(*args, **kwargs)

            aloop.call_soon_threadsafe = counted  # type: ignore[method-assign]
            c0 = time.thread_time()
            await asyncio.gather(*(one() for _ in range(producers)))
            return (time.thread_time() - c0) * 1e6

        w0 = thread_cpu_us(w._thread)
        loop_us = asyncio.run(main())
        writer_us = thread_cpu_us(w._thread) - w0
        w.close()
        if not null:
            journal.close()  # type: ignore[union-attr]
    total = per * producers
    return loop_us / total, writer_us / total, wakeups / total, notified / total


def main() -> None:
    """Run the benches and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=64_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--only", choices=("build", "loop"))
    parser.add_argument("--null-journal", action="store_true",
                        help="loop: a journal that keeps nothing (no disk: CPU only)")
    args = parser.parse_args()
    if args.only in (None, "build"):
        runs = [build(args.events, args.batch) for _ in range(args.rounds)]
        print(f"build: writer CPU {statistics.median(runs):.2f} µs/event "
              f"(batches of {args.batch}, median of {args.rounds})")
    if args.only in (None, "loop"):
        if not args.null_journal:
            with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
                p50, p99 = fdatasync_floor(Path(tmp))
            print(f"floor: append 300 B + fdatasync p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        got = [loop(args.events, args.producers, args.null_journal) for _ in range(args.rounds)]
        print(f"loop: {args.producers} producers: event loop "
              f"{statistics.median(g[0] for g in got):.2f} µs/event, writer "
              f"{statistics.median(g[1] for g in got):.2f} µs/event, loop wake-ups "
              f"{statistics.median(g[2] for g in got):.3f}/event, writer wake-ups "
              f"{statistics.median(g[3] for g in got):.3f}/event (median of {args.rounds})")


if __name__ == "__main__":
    main()
