"""The journal writer's CPU per event, and what a producer on an event loop pays per event.

``build``: the writer's own work per event (row, pseudonym, id, chain link and
hash, record bytes, checkpoints) on batches of ``--batch`` events, with a
journal that keeps nothing (no disk): CPU µs per event, median of ``--rounds``.
``loop``: ``--producers`` coroutines on one event loop each commit events one
after the other (``JournalWriter.hand``, as ``Guard.acommit`` does) into a real
journal: CPU µs per event of the event loop's thread and of the writer thread,
and the wake-ups per event of the event loop (the writer's eventfd writes) and of
the writer (rings) (``--null-journal``: no disk, for instruction counts of the
hand-over; ``--floor``: also, rounds alternated, a writer that appends pre-made
records, the floor of the hand-over, thread and sync with no per-event work;
``--subjects N``: each event names the next of N subjects, asked of a subject
register with entries first, rounds alternated with the register's digests shared
with the writer and not).
``lone``: one coroutine commits one event at a time with a pause between them (the
writer asleep each time, as at one connection), and the time of a lone commit is
split: (a) the event loop's ``start`` to the writer thread's wake-up, the
writer's build, (b) the append with its ``fdatasync``, the writer's tail, (c) its
release (the loop's eventfd written) to the task's resumption; beside it the
``fdatasync`` floor of the same folder, back to back and after the same pause,
all in one run.
``sync``: one batch of ``--batch`` 300-byte records written and ``fdatasync``-ed at a
time, three ways in one run (rounds alternated): appended at the end (the file
grows), written over zeros written and synced before (no size change), written into
a ``posix_fallocate``d region (unwritten extents), and through ``Journal.append``
(this tree's; ``--baseline TREE``: also that checkout's, loaded in the same process);
CPU (user+sys of the thread) and latency per batch, and the block device's write and
flush requests per batch; outside ``Journal.append``, the syncs grouped by the requests
each made (the data's write and the flush, or also the inode's). ``--folder DIR``
(repeatable): in each of these folders, rounds alternated; ``--ways``: these ways only;
``--sync-gap-ms``: a pause before each batch (a lone commit's).
``turns``: ``--producers`` tasks on one loop each commit, work ``--work-us`` with a
syscall, and pause 0-2 ms, as requests arriving apart: the writer's CPU per event
and its events per batch.
``trail``: ``--events`` events from ``--producers`` coroutines through a real
``JournalTrail`` (a journal and an SQLite store in a temporary folder, the index
left to ``guard audit index``, so no child runs): the writer thread's and the
event loop's CPU µs per event; under callgrind (``--separate-threads=yes``, two
lengths, the difference) their instructions per event.
``handover``: ``--lone-events`` lone commits (the same pause) into a journal that
keeps nothing, each handed over as the guard does (an entry of the producer's own,
``JournalWriter.hand``; ``start`` on a checkout from before it), nothing timed:
for instructions per thread under callgrind (``--separate-threads=yes``, two
lengths, the difference); ``--pause-only`` counts the loop's pauses alone, to subtract.

``http``: the example service guarded (``bench/http.py``'s server; ``--baseline
TREE``: also that checkout's, served beside it), ``--producers`` connections of
``wrk`` for ``--seconds``, then one connection: per phase the journal's batches
(the writer thread's ``write`` calls from ``/proc``, two a batch: the journal's and
the loop's eventfd), records per batch, and the writer thread's CPU per batch and
per request (user and kernel), from which a batch's fixed cost and an event's
follow (``cost = fixed + per_event * size``, the two phases' sizes).

Usage: python bench/writer.py [--events N] [--rounds 3] [--batch 64] [--producers 32]
       [--only build|loop|lone|sync|turns|handover|trail|http] [--lone-events 2000] [--gap-ms 0.5]
       [--folder DIR ...] [--ways zeroed,Journal] [--sync-gap-ms 0.5]
(under callgrind: valgrind --tool=callgrind python bench/writer.py --only build)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.util
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _pg import fdatasync_floor
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import EventKind, derive_chain_key
from guard.audit._journal import Journal, open_lane
from guard.audit._jwriter import JournalWriter, _Item

KEY = b"b" * 32
JOURNALS: dict[str, Any] = {}  # sync: the Journal classes compared (this tree's, --baseline's)
PAUSE = [0.0]  # sync: seconds slept before each batch (--sync-gap-ms)
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
    folder = Path(tempfile.gettempdir())  # where the writer's reserve would look

    def append(self, payloads: Sequence[bytes]) -> int:
        """Count the records."""
        self.next_offset += len(payloads)
        return self.next_offset


def thread_cpu_us(thread: threading.Thread) -> float:
    """CPU time a thread of this process has used so far, in µs (Linux schedstat)."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1000


class Commit:
    """One commit as the guard hands it to the writer: an entry of the producer's own."""

    __slots__ = ("fields", "future", "result", "waker")
    kind = EventKind.DECISION

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.future = self.result = self.waker = None


def committer(w: JournalWriter) -> Any:
    """What a producer calls per commit: ``hand`` an entry of its own (made once and used
    again, as the decision's fields exist anyway), or ``start`` on a tree without it."""
    hand = getattr(w, "hand", None)
    if hand is None:  # a checkout from before the entries (--tree, PYTHONPATH)
        return lambda: w.start(EventKind.DECISION, FIELDS)
    entry = Commit(FIELDS)

    def again() -> Any:
        entry.result = None
        return hand(entry)

    return again


def writer(journal: Any, floor: bool = False) -> JournalWriter:
    """A keyed writer on ``journal`` (a checkpoint every 1,000 events, as by default);
    ``floor``: one that appends pre-made records only (:class:`FloorWriter`)."""
    return (FloorWriter if floor else JournalWriter)(
        journal, hmac_key=KEY, signing_key=Ed25519PrivateKey.generate(), writer_id="bench",
        chain_key=_chain_key())


class FloorWriter(JournalWriter):
    """The floor of the journal's path: the same hand-over, thread, wake-ups, framing and
    ``fdatasync``, but each batch appends a pre-made record per event (one built once from
    the bench's fields) and does no per-event work of its own: no row, id, pseudonym,
    link, checkpoint nor listener. What a writer costs over it is the writer's Python."""

    def __init__(self, journal: Any, **kwargs: Any) -> None:
        super().__init__(journal, **kwargs)
        from guard.audit._fields import content

        head = content(EventKind.DECISION, FIELDS, self._pseudonyms, "2026-12-01T00:00:00Z",
                       "0" * 36)
        self._record = self._linker.link(head, 1, "0" * 64)[1]

    def _commit(self, items: list[Any]) -> Any:
        self._append([self._record] * len(items))
        for item in items:
            item.result = "floor"
        return (), ()


def _chain_key() -> Any:
    from guard.audit._fields import ChainKey

    return ChainKey(derive_chain_key(KEY))


def build(events: int, batch: int) -> float:
    """The writer's CPU µs per event, batches of ``batch`` built on this thread."""
    w = writer(NullJournal())
    w.close()
    w._opened = True
    c0 = time.thread_time()
    for _ in range(events // batch):
        w._commit([_Item(EventKind.DECISION, FIELDS) for _ in range(batch)])
    return (time.thread_time() - c0) * 1e6 / (events // batch * batch)


def named(w: JournalWriter, subjects: int, share: bool) -> Any:
    """What a producer calls per commit when each event names the next of ``subjects``
    subjects, asked of a subject register with entries first (as the guard asks it);
    ``share``: the writer reads the register's digests (``JournalWriter.share_digests``)."""
    from guard.rights import EntryKind, Record, Register

    register = Register(KEY)
    register.apply(register.pseudonym("someone"), [Record(EntryKind.RESTRICTION, "",
                                                          datetime.date(2020, 1, 1))])
    if share:
        w.share_digests(register.digests, register.pseudonym)
    names = [f"customer-{n}" for n in range(subjects)]
    at = [random.randrange(subjects)]
    hand, lookup = w.hand, register.lookup

    def again() -> Any:
        at[0] = n = (at[0] + 1) % subjects
        lookup(names[n])
        return hand(Commit({**FIELDS, "subject_id": names[n]}))

    return again


def loop(events: int, producers: int, null: bool = False, subjects: int = 0,
         share: bool = False, floor: bool = False) -> tuple[float, float, float, float, float]:
    """CPU µs per event of the event loop's and the writer's thread; wake-ups per event of
    the loop (eventfd writes) and of the writer (rings); wall µs per event. ``subjects``:
    each event names the next of that many subjects (:func:`named`); ``floor``: the
    writer appends pre-made records (:class:`FloorWriter`)."""
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        journal = NullJournal() if null else open_lane(Path(tmp))
        w = writer(journal, floor)
        each = named(w, subjects, share) if subjects else None
        per = events // producers
        wakeups = notified = 0
        ring, release = w._ring, w._release

        def counted_ring() -> None:
            nonlocal notified
            notified += 1
            ring()

        def counted_release(items: list[Any]) -> None:
            nonlocal wakeups
            wakeups += len({item.waker for item in items if item.waker is not None})
            release(items)

        w._ring, w._release = counted_ring, counted_release  # type: ignore[method-assign]

        async def one() -> None:
            commit = each or committer(w)
            for _ in range(per):
                await commit()

        async def main() -> float:
            c0 = time.thread_time()
            await asyncio.gather(*(one() for _ in range(producers)))
            return (time.thread_time() - c0) * 1e6

        w0 = thread_cpu_us(w._thread)
        t0 = time.perf_counter()
        loop_us = asyncio.run(main())
        wall_us = (time.perf_counter() - t0) * 1e6
        writer_us = thread_cpu_us(w._thread) - w0
        w.close()
        if not null:
            journal.close()  # type: ignore[union-attr]
    total = per * producers
    return loop_us / total, writer_us / total, wakeups / total, notified / total, wall_us / total


class TimedJournal:
    """A journal whose appends note when they began and ended (``perf_counter_ns``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.began = self.ended = 0

    def append(self, payloads: Sequence[bytes]) -> int:
        """Append through to the inner journal."""
        self.began = time.perf_counter_ns()
        try:
            offset: int = self.inner.append(payloads)
        finally:
            self.ended = time.perf_counter_ns()
        return offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


PARTS = ("a wake writer", "build", "b append+fdatasync", "writer tail", "c wake loop+resume",
         "total", "writer CPU/commit")


def lone(events: int, gap: float, work: float = 0.0) -> dict[str, list[float]]:
    """Commit ``events`` lone events (a pause of ``gap`` s between them); per part, the µs.

    ``work``: seconds of Python the loop runs after handing each event over and before
    awaiting it (a read's handler while its commit is in flight)."""
    parts: dict[str, list[float]] = {name: [] for name in PARTS}
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        journal = open_lane(Path(tmp))
        w = writer(journal)
        timed = TimedJournal(journal)
        w.journal = timed  # type: ignore[assignment]
        marks = {"commit": 0, "handed": 0}
        commit = w._commit

        def timed_commit(items: Any) -> Any:
            marks["commit"] = time.perf_counter_ns()
            return commit(items)

        release = w._release

        def handed(items: list[_Item]) -> None:
            marks["handed"] = time.perf_counter_ns()
            release(items)

        w._commit, w._release = timed_commit, handed  # type: ignore[method-assign]

        async def main() -> None:
            await w.start(EventKind.DECISION, FIELDS)  # the chain's opening checkpoint
            cpu0 = thread_cpu_us(w._thread)
            for _ in range(events):
                await asyncio.sleep(gap)
                marks["commit"] = marks["handed"] = 0
                t0 = time.perf_counter_ns()
                future = w.start(EventKind.DECISION, FIELDS)
                if work:
                    until = time.perf_counter() + work
                    while time.perf_counter() < until:
                        pass
                await future
                t1 = time.perf_counter_ns()
                parts["build"].append((timed.began - marks["commit"]) / 1e3)
                parts["b append+fdatasync"].append((timed.ended - timed.began) / 1e3)
                parts["total"].append((t1 - t0) / 1e3)
                parts["a wake writer"].append((marks["commit"] - t0) / 1e3)
                parts["writer tail"].append((marks["handed"] - timed.ended) / 1e3)
                parts["c wake loop+resume"].append((t1 - marks["handed"]) / 1e3)
            # the writer thread's CPU (kernel time included) per commit
            parts["writer CPU/commit"].append((thread_cpu_us(w._thread) - cpu0) / events)

        asyncio.run(main())
        w.close()
        journal.close()
    return parts


def trail(events: int, producers: int) -> tuple[float, float]:
    """``events`` from ``producers`` coroutines through a real trail; CPU µs per event of
    the event loop's thread and of the writer thread."""
    from guard.audit._jtrail import JournalTrail
    from guard.config import AuditSettings

    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        folder = Path(tmp)  # the keys are made on first use
        settings = AuditSettings(store=f"sqlite:///{folder / 'audit.db'}",
                                 hmac_key=folder / "hmac.key",
                                 signing_key=folder / "signing.key",
                                 journal=folder / "journal", index="external")
        t = JournalTrail(settings)
        per = events // producers

        async def one() -> None:
            for _ in range(per):
                await t.start_fields(EventKind.DECISION, FIELDS)

        async def main() -> float:
            c0 = time.thread_time()
            await asyncio.gather(*(one() for _ in range(producers)))
            return (time.thread_time() - c0) * 1e6

        w0 = thread_cpu_us(t.writer._thread)
        loop_us = asyncio.run(main())
        writer_us = thread_cpu_us(t.writer._thread) - w0
        t.writer.close()
        t.journal.close()
        t.store.close()
    total = per * producers
    return loop_us / total, writer_us / total


def handover(events: int, gap: float, pause_only: bool) -> None:
    """``events`` lone commits (a pause of ``gap`` s before each) into a journal of nothing."""
    w = writer(NullJournal())
    commit = committer(w)

    async def main() -> None:
        await commit()  # the chain's opening checkpoint
        for _ in range(events):
            await asyncio.sleep(gap)
            if not pause_only:
                await commit()

    asyncio.run(main())
    w.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def paused_floor(folder: Path, count: int, gap: float) -> list[float]:
    """Append 300 B + fdatasync with a pause of ``gap`` s before each, in µs."""
    path = folder / "paused.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            time.sleep(gap)
            t0 = time.perf_counter_ns()
            os.write(fd, b"x" * 300)
            os.fdatasync(fd)
            times.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        os.close(fd)
    return times


def run_lone(events: int, rounds: int, gap: float, work: float = 0.0) -> None:
    """Print the parts of a lone commit and the floors (one run)."""
    got: dict[str, list[float]] = {n: [] for n in PARTS}
    floors, paused = [], []
    for _ in range(rounds):  # alternated, so that both see the same load
        for name, values in lone(events, gap, work).items():
            got[name] += values
        with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
            floors.append(fdatasync_floor(Path(tmp), events))
            paused += paused_floor(Path(tmp), events, gap)
    p50 = statistics.median(f[0] for f in floors)
    p99 = statistics.median(f[1] for f in floors)
    print(f"floor: append 300 B + fdatasync back to back p50 {p50 * 1e3:.0f} µs, p99 "
          f"{p99 * 1e3:.0f} µs; after a {gap * 1e3:g} ms pause p50 {_pct(paused, 0.5):.0f} µs, "
          f"p99 {_pct(paused, 0.99):.0f} µs (same folder, {rounds} rounds)")
    print("lone commit, through the writer thread:")
    for name, values in got.items():
        print(f"  {name:<20} p50 {_pct(values, 0.5):7.1f} µs  p99 {_pct(values, 0.99):8.1f}"
              f" µs  (n={len(values)})")


def _journal_class(tree: Path | None) -> Any:
    """``Journal`` of this tree, or of the checkout ``tree`` (loaded beside this one's)."""
    if tree is None:
        return Journal
    spec = importlib.util.spec_from_file_location(
        "base_journal", tree / "guard" / "audit" / "_journal.py")
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules["base_journal"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Journal


def _journal_round(folder: Path, journal_class: Any, batches: int,
                   batch: int) -> tuple[list[float], float]:
    """``batches`` appends of ``batch`` records through a journal; latencies and CPU, in µs."""
    journal = journal_class(folder / f"lane-{journal_class.__module__}")
    records = [b"[" + b"x" * 298 + b"]"] * batch
    times = []
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    for _ in range(batches):
        if PAUSE[0]:
            time.sleep(PAUSE[0])
        t0 = time.perf_counter_ns()
        journal.append(records)
        times.append((time.perf_counter_ns() - t0) / 1e3)
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    journal.close()
    shutil.rmtree(journal.folder)
    return times, (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1e6 / batches


def _sync_round(folder: Path, how: str, batches: int,
                batch: int) -> tuple[list[float], float, list[tuple[int, float, float]]]:
    """``batches`` writes of ``batch`` records + fdatasync ``how``; latencies and CPU, in µs,
    and per sync (not through a Journal) the device's write requests, latency and CPU."""
    if how.startswith("Journal"):
        return (*_journal_round(folder, JOURNALS[how], batches, batch), [])
    path = folder / f"{how}.bin"
    data = b"x" * 300 * batch
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    each: list[tuple[int, float, float]] = []
    try:
        if how == "zeroed":
            os.write(fd, bytes(len(data) * batches))
            os.fsync(fd)
        elif how == "fallocate":
            os.posix_fallocate(fd, 0, len(data) * batches)
            os.fsync(fd)
        before = _device_writes(folder)[0]
        for number in range(batches):
            if PAUSE[0]:
                time.sleep(PAUSE[0])
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            os.pwrite(fd, data, number * len(data))
            os.fdatasync(fd)
            c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
            after = _device_writes(folder)[0]  # (outside the times)
            each.append((after - before, (t1 - t0) / 1e3, (c1 - c0) / 1e3))
            before = after
    finally:
        os.close(fd)
        path.unlink()
    return [e[1] for e in each], sum(e[2] for e in each) / batches, each


def _device_writes(folder: Path) -> tuple[int, int]:
    """Write and flush requests the block device under ``folder`` has completed (its
    ``stat``; the whole device's, other programs' included)."""
    dev = os.stat(folder).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    fields = stat.read_text().split() if stat.exists() else ["0"] * 17
    return int(fields[4]), int(fields[15])


def run_sync(batches: int, batch: int, rounds: int, folders: Sequence[Path | None] = (None,),
             ways: Sequence[str] = ()) -> None:
    """Print the latency and CPU of a batch's write + fdatasync, several ways, in each of
    ``folders`` (None: a temporary folder), rounds alternated (one run); with the block
    device's write requests per batch (the data's, the inode's, a journal's)."""
    ways = tuple(ways) or ("append", "zeroed", "fallocate", *JOURNALS)
    cells = [(folder, how) for folder in folders for how in ways]
    times: dict[tuple[Path | None, str], list[float]] = {cell: [] for cell in cells}
    cpus: dict[tuple[Path | None, str], list[float]] = {cell: [] for cell in cells}
    writes: dict[tuple[Path | None, str], list[float]] = {cell: [] for cell in cells}
    flushes: dict[tuple[Path | None, str], list[float]] = {cell: [] for cell in cells}
    each: dict[tuple[Path | None, str], list[tuple[int, float, float]]] = {c: [] for c in cells}
    for _ in range(rounds):
        for folder, how in cells:
            with tempfile.TemporaryDirectory(prefix="bench-writer-", dir=folder) as tmp:
                (w0, f0), (got, cpu, syncs) = (_device_writes(Path(tmp)),
                                               _sync_round(Path(tmp), how, batches, batch))
                w1, f1 = _device_writes(Path(tmp))
                each[folder, how] += syncs
                writes[folder, how].append((w1 - w0) / batches)
                flushes[folder, how].append((f1 - f0) / batches)
            times[folder, how] += got
            cpus[folder, how].append(cpu)
    pause = f", a {PAUSE[0] * 1e3:g} ms pause before each" if PAUSE[0] else ""
    print(f"sync: {batches} batches of {batch} x 300 B{pause}, {rounds} rounds alternated")
    for folder, how in cells:
        where = f"{folder}: " if folder is not None else ""
        cell = (folder, how)
        print(f"  {where}{how:<16} write+fdatasync p50 {_pct(times[cell], 0.5):7.1f} µs  p99 "
              f"{_pct(times[cell], 0.99):7.1f} µs  CPU {statistics.median(cpus[cell]):6.1f} "
              f"µs/batch (median; rounds {', '.join(f'{c:.1f}' for c in cpus[cell])})  "
              f"device writes {statistics.median(writes[cell]):.2f}, flushes "
              f"{statistics.median(flushes[cell]):.2f} a batch")
        for count in sorted({e[0] for e in each[cell]}):  # the syncs by the device's writes
            group = [e for e in each[cell] if e[0] == count]
            print(f"    {count} device writes: {len(group)} syncs "
                  f"({len(group) / len(each[cell]):.0%}), p50 "
                  f"{_pct([e[1] for e in group], 0.5):.1f} µs, p99 "
                  f"{_pct([e[1] for e in group], 0.99):.1f} µs, CPU "
                  f"{statistics.mean(e[2] for e in group):.1f} µs")


def turns(events: int, producers: int, work_us: float) -> tuple[float, float, float]:
    """``producers`` tasks on one loop, each committing, then working ``work_us`` µs with a
    syscall (a response's send), then pausing 0-2 ms (the next request's arrival), into a
    real journal; writer CPU µs per event, events per batch, wall µs per event."""
    batches = 0
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        journal = open_lane(Path(tmp))
        w = writer(journal)
        commit = w._commit

        def counted(items: Any) -> Any:
            nonlocal batches
            batches += 1
            return commit(items)

        w._commit = counted  # type: ignore[method-assign]
        per = events // producers
        null = os.open(os.devnull, os.O_WRONLY)

        async def one() -> None:
            for _ in range(per):
                await w.start(EventKind.DECISION, FIELDS)
                end = time.perf_counter() + work_us / 1e6
                while time.perf_counter() < end:
                    pass
                os.write(null, b"x")
                await asyncio.sleep(random.random() * 0.002)

        async def run() -> None:
            await asyncio.gather(*(one() for _ in range(producers)))

        w0, t0 = thread_cpu_us(w._thread), time.perf_counter()
        asyncio.run(run())
        wall, writer_us = time.perf_counter() - t0, thread_cpu_us(w._thread) - w0
        w.close()
        journal.close()
        os.close(null)
    total = per * producers
    return writer_us / total, total / max(1, batches), wall * 1e6 / total

def _writer_counts(pid: int, tid: int) -> tuple[float, float, int, int]:
    """A server's writer thread so far: user and kernel CPU seconds, ``write`` calls, and
    the times it slept (voluntary context switches)."""
    task = Path(f"/proc/{pid}/task/{tid}")
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    io = dict(line.split(": ") for line in (task / "io").read_text().splitlines())
    status = dict(line.split(":\t") for line in (task / "status").read_text().splitlines()
                  if ":\t" in line)
    return (int(fields[11]) / tick, int(fields[12]) / tick, int(io["syscw"]),
            int(status["voluntary_ctxt_switches"]))


def _schedstat_s(pid: int, tid: int) -> float:
    """A thread's CPU seconds so far (schedstat: ns, finer than the ticks of ``stat``)."""
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0]) / 1e9


def http_batches(seconds: float, connections: int, rounds: int, tree: Path | None) -> None:
    """Serve the guarded example (and ``tree``'s), load it with wrk at ``connections`` then
    at one connection, and print the journal's batches and the writer's CPU per phase."""
    repo = Path(__file__).resolve().parent.parent
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # not the stdlib
    sys.path.insert(0, str(repo))  # ``http`` beside this file: bench.http, not ``http``
    from bench import http as web
    from guard.audit._journal import durable_end, lanes
    from guard.audit._jtrail import journal_folder
    from guard.cli._token import issue_token

    began, load0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-writer-http-"))
    opts = web.server_options().parse_args([])
    token = issue_token(web.settings_for(workdir).identity, web.CALLER, None, 3600)
    plan = {"guarded": ("guarded", repo)}
    if tree is not None:
        plan["baseline"] = ("baseline", tree.resolve())
    servers = {label: web.start(kind, workdir, opts, where, label)
               for label, (kind, where) in plan.items()}
    phases = (connections, 1)
    got: dict[tuple[str, int], list[tuple[float, ...]]] = {
        (label, c): [] for label in servers for c in phases}
    try:
        for _, url in servers.values():
            web.load(url, token, 4, 1.0, workdir, True)
        writers = {}
        for label, (proc, _) in servers.items():
            roles = web.thread_roles(proc.pid, workdir, label)
            writers[label] = next(t for t, role in roles.items() if role == "writer")
        for round_no in range(rounds):
            order = list(servers)[round_no % len(servers):] + list(servers)[
                :round_no % len(servers)]
            for label in order:
                proc, url = servers[label]
                folder = journal_folder(web.server_settings(workdir, label, plan[label][0],
                                                            opts).audit)
                tid = writers[label]
                for c in phases:
                    ends0 = sum(durable_end(lane) for lane in lanes(folder))
                    user0, sys0, w0, slept0 = _writer_counts(proc.pid, tid)
                    cpu0 = _schedstat_s(proc.pid, tid)
                    run = web.wrk_run(url, token, c, seconds, workdir)
                    user1, sys1, w1, slept1 = _writer_counts(proc.pid, tid)
                    cpu = _schedstat_s(proc.pid, tid) - cpu0
                    records = sum(durable_end(lane) for lane in lanes(folder)) - ends0
                    batches = max(1, (w1 - w0) // 2)
                    share = (sys1 - sys0) / max(1e-9, user1 - user0 + sys1 - sys0)
                    got[(label, c)].append((run.rps, records / batches, batches / run.seconds,
                                            cpu * 1e6 / batches, cpu * 1e6 / run.requests,
                                            share, run.p50_ms, (slept1 - slept0) / batches))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        floor = fdatasync_floor(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{began}; load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"fdatasync (audit folder) p50 {floor[0]:.3f} ms, p99 {floor[1]:.3f} ms")
    print(f"http: wrk {seconds:g} s at {connections} connections, then 1; {rounds} rounds "
          "(medians); the writer thread's CPU from schedstat, its kernel share from stat")
    print(f"  {'server':<9} {'conns':>5} {'req/s':>7} {'ev/batch':>8} {'batch/s':>8} "
          f"{'us/batch':>8} {'us/req':>7} {'kernel':>6} {'p50 ms':>7} {'sleeps/batch':>12}")
    for (label, c), rows in got.items():
        med = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(f"  {label:<9} {c:>5} {med[0]:>7.0f} {med[1]:>8.2f} {med[2]:>8.0f} "
              f"{med[3]:>8.1f} {med[4]:>7.2f} {med[5]:>6.0%} {med[6]:>7.3f} {med[7]:>12.2f}")
    for label in servers:
        many, one = ([statistics.median(column) for column in zip(*got[(label, c)],
                                                                    strict=True)]
                     for c in phases)
        if many[1] > one[1] + 0.5:
            per_event = (many[3] - one[3]) / (many[1] - one[1])
            fixed = one[3] - per_event * one[1]
            print(f"  {label}: a batch costs the writer {fixed:.1f} us + {per_event:.1f} us "
                  f"an event (the two phases' medians)")


def main() -> None:
    """Run the benches and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=64_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--only", choices=("build", "loop", "lone", "sync", "turns", "handover",
                                                  "trail", "http"))
    parser.add_argument("--seconds", type=float, default=6.0, help="http: seconds per phase")
    parser.add_argument("--pause-only", action="store_true", help="handover: pauses alone")
    parser.add_argument("--lone-events", type=int, default=2000)
    parser.add_argument("--gap-ms", type=float, default=0.5,
                        help="lone: pause between two commits (the writer falls asleep)")
    parser.add_argument("--lone-work-us", type=float, default=0.0,
                        help="lone: Python the loop runs after each hand-over (a handler)")
    parser.add_argument("--null-journal", action="store_true",
                        help="loop: a journal that keeps nothing (no disk: CPU only)")
    parser.add_argument("--floor", action="store_true",
                        help="loop: also the floor, a writer appending pre-made records "
                             "(rounds alternated)")
    parser.add_argument("--subjects", type=int, default=0,
                        help="loop: each event names the next of N subjects, asked of a "
                             "register with entries; rounds with its digests shared or not")
    parser.add_argument("--work-us", type=float, default=40.0,
                        help="turns: each producer's work per commit (as a request's)")
    parser.add_argument("--folder", type=Path, action="append",
                        help="sync: run in this folder (repeat: each, rounds alternated)")
    parser.add_argument("--sync-gap-ms", type=float, default=0.0,
                        help="sync: pause before each batch (as requests apart)")
    parser.add_argument("--ways", default="",
                        help="sync: these ways only (append,zeroed,fallocate,Journal)")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="sync: also append through the Journal of this checkout; "
                             "http: also serve this checkout's guarded app")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="SECONDS",
                        help="sys.setswitchinterval for this process (the interpreter lock's "
                             "hand-over between the event loop and the writer; default 0.005)")
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    JOURNALS["Journal"] = _journal_class(None)
    PAUSE[0] = args.sync_gap_ms / 1e3
    if args.baseline is not None:
        JOURNALS["Journal@baseline"] = _journal_class(args.baseline)
    if args.only == "http":
        http_batches(args.seconds, args.producers, args.rounds, args.baseline)
        return
    if args.only == "handover":
        handover(args.lone_events, args.gap_ms / 1e3, args.pause_only)
    if args.only == "trail":
        got = [trail(args.events, args.producers) for _ in range(args.rounds)]
        print(f"trail: {args.producers} producers: event loop "
              f"{statistics.median(g[0] for g in got):.2f} µs/event, writer "
              f"{statistics.median(g[1] for g in got):.2f} µs/event (median of {args.rounds})")
    if args.only in (None, "build"):
        runs = [build(args.events, args.batch) for _ in range(args.rounds)]
        print(f"build: writer CPU {statistics.median(runs):.2f} µs/event "
              f"(batches of {args.batch}, median of {args.rounds})")
    if args.only in (None, "sync"):
        for size in sorted({1, args.batch}):
            run_sync(args.lone_events, size, args.rounds, args.folder or [None],
                     args.ways.split(",") if args.ways else ())
    if args.only in (None, "turns"):
        runs = [turns(args.events // 4, args.producers, args.work_us) for _ in range(args.rounds)]
        print(f"turns: {args.producers} producers, {args.work_us:g} µs work each: writer "
              f"{statistics.median(r[0] for r in runs):.2f} µs/event, "
              f"{statistics.median(r[1] for r in runs):.1f} events/batch, "
              f"{statistics.median(r[2] for r in runs):.1f} µs/event wall "
              f"(median of {args.rounds})")
    if args.only in (None, "lone"):
        run_lone(args.lone_events, args.rounds, args.gap_ms / 1e3, args.lone_work_us / 1e6)
    if args.only in (None, "loop"):
        if not args.null_journal:
            with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
                p50, p99 = fdatasync_floor(Path(tmp))
            print(f"floor: append 300 B + fdatasync p50 {p50:.3f} ms, p99 {p99:.3f} ms")
        ways: list[str] = ["writer"]  # rounds alternated
        if args.subjects and hasattr(JournalWriter, "share_digests"):
            ways = ["shared", "made again"]  # the register's digests
        if args.floor:
            ways.append("floor")
        got: dict[str, list[tuple[float, ...]]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way in ways:
                got[way].append(loop(args.events, args.producers, args.null_journal,
                                     args.subjects, way == "shared", way == "floor"))
        for way, runs in got.items():
            what = f", {args.subjects:,} subjects, digests {way}" if way in (
                "shared", "made again") else ""
            if way == "floor":
                what = ", FLOOR (pre-made records, no per-event work in the writer)"
            print(f"loop: {args.producers} producers{what}: event loop "
                  f"{statistics.median(g[0] for g in runs):.2f} µs/event, writer "
                  f"{statistics.median(g[1] for g in runs):.2f} µs/event, loop wake-ups "
                  f"{statistics.median(g[2] for g in runs):.3f}/event, writer wake-ups "
                  f"{statistics.median(g[3] for g in runs):.3f}/event, wall "
                  f"{statistics.median(g[4] for g in runs):.2f} µs/event "
                  f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
