"""A batch's write and fdatasync through io_uring, against the writer thread, in one run.

``thread``: the journal writer as it is (``JournalWriter`` on a real journal):
producers on an event loop call ``start``; the writer thread wakes, builds the
batch, writes, syncs and writes the loop's eventfd.

``uring``: the same build (``JournalWriter._commit`` on a journal that keeps the
batch's records) on the event loop's own thread, then the batch's ``write`` (with
the zeros grown ahead, as ``Journal.append`` writes them) and its ``fdatasync``
submitted as linked SQEs on an io_uring (the write posts no completion unless it
fails or falls short) whose completion signals an eventfd the loop reads: no
writer thread; the kernel's io-wq worker runs the write and the sync. One batch
in flight at a time; what is queued meanwhile is the next batch. ``uring-async``:
the same with the write sent to io-wq at once (``IOSQE_ASYNC``), not tried inline
first. A prototype: a failed batch stops the bench.

Per mode, rounds alternated: ``--lone-events`` lone commits (``--gap-ms`` pause
before each, the pause's own cost measured alone and subtracted): p50 / p99 of a
commit, CPU and context switches per commit of the whole process (every thread,
io-wq's included) and per thread; ``--producers`` coroutines committing back to
back: events a batch, CPU per batch and per event, context switches per batch.
Beside them the disk's floor in the same folder: append 300 B + ``fdatasync``
back to back, and 300 B over zeros + ``fdatasync`` after the same pause, by the two
system calls and through the ring.

Needs the ``liburing`` binding (pinned as the ``bench`` extra, not a dependency of the
guard): ``pip install --target DIR -c constraints.txt liburing``, then
``PYTHONPATH=DIR:..`` from ``bench/``.

Usage: python bench/uring.py [--rounds 3] [--lone-events 1000] [--gap-ms 0.5]
       [--events 32000] [--producers 32] [--modes thread,uring,uring-async] [--folder DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import select
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import liburing as L  # noqa: N812
from _pg import fdatasync_floor
from crc32c import crc32c
from writer import FIELDS, _pct, writer

from guard.audit import EventKind
from guard.audit._journal import _HEADER, _ZEROS, GROW, Journal, open_lane
from guard.audit._jwriter import JournalWriter, _Item

WRITE, ZEROS, SYNC = 1, 2, 3  # user_data of the SQEs


class Kept:
    """A journal that keeps the batch's records for the ring (the build's only caller)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.folder = journal.folder
        self.records: Sequence[bytes] = ()

    @property
    def next_offset(self) -> int:
        """The real journal's."""
        return self.journal.next_offset

    def append(self, payloads: Sequence[bytes]) -> int:
        """Keep the records (the ring writes them)."""
        self.records = payloads
        return self.journal.next_offset


class UringLane:
    """Commits from an event loop: build on the loop, write + fdatasync through io_uring."""

    def __init__(self, folder: Path, loop: asyncio.AbstractEventLoop,
                 async_: bool = False) -> None:
        self.first = L.IOSQE_ASYNC if async_ else 0  # the write straight to io-wq
        self.journal = open_lane(folder)
        self.kept = Kept(self.journal)
        self.writer: JournalWriter = writer(self.kept)
        self.writer.close()  # its thread ends at once: the loop builds (_commit)
        self.ring = L.Ring()
        L.io_uring_queue_init(8, self.ring)
        self.cqe = L.Cqe()
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        L.io_uring_register_eventfd(self.ring, self.efd)
        self.loop = loop
        loop.add_reader(self.efd, self._reap)
        self.queue: list[_Item] = []
        self.inflight: list[_Item] | None = None
        self.data = b""
        self.scheduled = False
        self.batches = 0
        self.flush_ns = self.reap_ns = 0  # the loop thread's CPU in each

    def start(self, kind: EventKind, fields: Any) -> asyncio.Future[str]:
        """Queue an event; the future resolves with its id once its batch is synced."""
        future: asyncio.Future[str] = self.loop.create_future()
        item = _Item(kind, fields)
        item.future = future
        self.queue.append(item)
        if self.inflight is None and not self.scheduled:
            self.scheduled = True  # the rest of this turn's events join the batch
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        c0 = time.thread_time_ns()
        try:
            self._submit()
        finally:
            self.flush_ns += time.thread_time_ns() - c0

    def _submit(self) -> None:
        self.scheduled = False
        items, self.queue = self.queue, []
        self.writer._commit(items)
        records = self.kept.records
        parts: list[bytes] = [b""] * (2 * len(records))
        parts[::2] = map(_HEADER.pack, map(len, records), map(crc32c, records))
        parts[1::2] = records
        self.data = data = b"".join(parts)
        journal, ring = self.journal, self.ring
        at = journal._size
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_write(sqe, journal._fd, data, at)
        sqe.flags = L.IOSQE_IO_LINK | L.IOSQE_CQE_SKIP_SUCCESS | self.first
        sqe.user_data = WRITE
        end = at + len(data)
        if end > journal._grown:
            sqe = L.io_uring_get_sqe(ring)
            L.io_uring_prep_write(sqe, journal._fd, _ZEROS, end)
            sqe.flags = L.IOSQE_IO_LINK | L.IOSQE_CQE_SKIP_SUCCESS
            sqe.user_data = ZEROS
            journal._grown = end + GROW
        sqe = L.io_uring_get_sqe(ring)
        L.io_uring_prep_fsync(sqe, journal._fd, L.IORING_FSYNC_DATASYNC)
        sqe.user_data = SYNC
        L.io_uring_submit(ring)
        self.inflight = items
        self.batches += 1

    def _reap(self) -> None:
        c0 = time.thread_time_ns()
        try:
            self._reaped()
        finally:
            self.reap_ns += time.thread_time_ns() - c0

    def _reaped(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            return
        done: dict[int, int] = {}
        while True:
            try:
                L.io_uring_peek_cqe(self.ring, self.cqe)
            except BlockingIOError:
                break
            entry = self.cqe[0]
            done[entry.user_data] = entry.res
            L.io_uring_cqe_seen(self.ring, entry)
        if SYNC not in done:
            return
        items, self.inflight = self.inflight or [], None
        if done[SYNC] != 0 or WRITE in done or ZEROS in done:
            raise OSError(f"the ring's batch failed: {done}")  # the prototype stops
        journal = self.journal
        journal._size += len(self.data)
        journal.next_offset += len(self.kept.records)
        journal._publish()
        for item in items:
            if item.future is not None and isinstance(item.result, str):
                item.future.set_result(item.result)
        if self.queue:
            self._submit()

    def close(self) -> None:
        """Stop reading the eventfd; close the ring and the journal."""
        self.loop.remove_reader(self.efd)
        L.io_uring_queue_exit(self.ring)
        os.close(self.efd)
        self.journal.close()


class ThreadLane:
    """The journal writer as it is, on a real journal; counts its batches."""

    def __init__(self, folder: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.journal = open_lane(folder)
        self.writer = writer(self.journal)
        WRITERS.add(self.writer._thread.native_id or 0)
        self.batches = 0
        self.flush_ns = self.reap_ns = 0  # the writer thread's CPU in its commits
        commit = self.writer._commit

        def counted(items: Any) -> Any:
            self.batches += 1
            c0 = time.thread_time_ns()
            try:
                return commit(items)
            finally:
                self.flush_ns += time.thread_time_ns() - c0

        self.writer._commit = counted  # type: ignore[method-assign]
        self.start = self.writer.start

    def close(self) -> None:
        """Stop the writer; close the journal."""
        self.writer.close()
        self.journal.close()


def threads() -> dict[str, tuple[int, int, float]]:
    """Per live thread of this process (``name/tid``): voluntary and involuntary context
    switches and CPU µs (schedstat)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = dict(line.split(":\t") for line in (task / "status").read_text()
                          .splitlines() if ":\t" in line)
            cpu = int((task / "schedstat").read_text().split()[0]) / 1e3
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[f"{name}/{task.name}"] = (int(status["voluntary_ctxt_switches"]),
                                      int(status["nonvoluntary_ctxt_switches"]), cpu)
    return out


WRITERS: set[int] = set()  # the writer threads' ids (Python 3.11 does not name threads)


def _kind(name: str) -> str:
    base, tid = name.split("/")
    if base.startswith("iou-wrk"):
        return "io-wq"
    if int(tid) == os.getpid():
        return "loop"
    return "writer" if int(tid) in WRITERS else base


class Meter:
    """The process's CPU and context switches over a phase, in total and per thread kind."""

    def __enter__(self) -> Meter:
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = threads()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        t1 = threads()
        r0 = self.r0
        self.cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1e6
        self.sys = (r1.ru_stime - r0.ru_stime) * 1e6
        self.vcs = r1.ru_nvcsw - r0.ru_nvcsw
        self.ivcs = r1.ru_nivcsw - r0.ru_nivcsw
        self.kinds: dict[str, list[float]] = {}
        for name, (v, i, c) in t1.items():
            v0, i0, c0 = self.t0.get(name, (0, 0, 0.0))
            kind = self.kinds.setdefault(_kind(name), [0.0, 0.0, 0.0])
            kind[0] += v - v0
            kind[1] += i - i0
            kind[2] += c - c0


Result = dict[str, list[float]]


def _note(result: Result, key: str, value: float) -> None:
    result.setdefault(key, []).append(value)


async def lone_phase(lane: Any, events: int, gap: float, result: Result) -> None:
    """``events`` lone commits after a pause each, then the pauses alone; per commit."""
    await lane.start(EventKind.DECISION, FIELDS)  # the chain's opening checkpoint
    await asyncio.sleep(0.05)
    times = []
    f0, r0 = lane.flush_ns, lane.reap_ns
    with Meter() as busy:
        for _ in range(events):
            await asyncio.sleep(gap)
            t0 = time.perf_counter_ns()
            await lane.start(EventKind.DECISION, FIELDS)
            times.append((time.perf_counter_ns() - t0) / 1e3)
    with Meter() as idle:
        for _ in range(events):
            await asyncio.sleep(gap)
    result.setdefault("lone µs", []).extend(times)
    _note(result, "lone build+submit (or +write+sync) µs", (lane.flush_ns - f0) / 1e3 / events)
    _note(result, "lone reap µs", (lane.reap_ns - r0) / 1e3 / events)
    _note(result, "lone CPU µs/commit", (busy.cpu - idle.cpu) / events)
    _note(result, "lone sys µs/commit", (busy.sys - idle.sys) / events)
    _note(result, "lone voluntary cs/commit", (busy.vcs - idle.vcs) / events)
    _note(result, "lone involuntary cs/commit", (busy.ivcs - idle.ivcs) / events)
    for kind, (v, _i, c) in busy.kinds.items():
        v0, _i0, c0 = idle.kinds.get(kind, [0.0, 0.0, 0.0])
        _note(result, f"lone {kind}: voluntary cs/commit", (v - v0) / events)
        _note(result, f"lone {kind}: CPU µs/commit", (c - c0) / events)


async def burst_phase(lane: Any, events: int, producers: int, result: Result) -> None:
    """``producers`` coroutines committing back to back; per batch and per event."""
    per = events // producers

    async def one() -> None:
        for _ in range(per):
            await lane.start(EventKind.DECISION, FIELDS)

    b0, f0, r0 = lane.batches, lane.flush_ns, lane.reap_ns
    with Meter() as m:
        await asyncio.gather(*(one() for _ in range(producers)))
    batches, total = lane.batches - b0, per * producers
    _note(result, "burst events/batch", total / batches)
    _note(result, "burst build+submit (or +write+sync) µs/batch",
          (lane.flush_ns - f0) / 1e3 / batches)
    _note(result, "burst reap µs/batch", (lane.reap_ns - r0) / 1e3 / batches)
    _note(result, "burst CPU µs/batch", m.cpu / batches)
    _note(result, "burst CPU µs/event", m.cpu / total)
    _note(result, "burst sys µs/event", m.sys / total)
    _note(result, "burst voluntary cs/batch", m.vcs / batches)
    _note(result, "burst events/s", total / m.wall)
    for kind, (v, _i, c) in m.kinds.items():
        _note(result, f"burst {kind}: voluntary cs/batch", v / batches)
        _note(result, f"burst {kind}: CPU µs/event", c / total)


def run_mode(mode: str, folder: Path, args: argparse.Namespace, result: Result) -> None:
    """One round of one mode in a fresh journal folder."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        lane: Any = (ThreadLane(folder, loop) if mode == "thread"
                     else UringLane(folder, loop, async_=mode == "uring-async"))
        try:
            await lone_phase(lane, args.lone_events, args.gap_ms / 1e3, result)
            await burst_phase(lane, args.events, args.producers, result)
        finally:
            lane.close()

    asyncio.run(main())


def floor(folder: Path, how: str, count: int, gap: float) -> list[float]:
    """300 B written over zeros + fdatasync, a pause before each, ``how``: ``plain`` (two
    system calls) or ``ring`` (linked SQEs, the completion's eventfd polled); in µs."""
    ring, cqe = L.Ring(), L.Cqe()
    L.io_uring_queue_init(8, ring)
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    L.io_uring_register_eventfd(ring, efd)
    poll = select.poll()
    poll.register(efd, select.POLLIN)
    path = folder / f"{how}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    data, times = b"x" * 300, []
    try:
        os.write(fd, bytes(300 * count))
        os.fsync(fd)
        for number in range(count):
            time.sleep(gap)
            t0 = time.perf_counter_ns()
            if how == "plain":
                os.pwrite(fd, data, number * 300)
                os.fdatasync(fd)
            else:
                sqe = L.io_uring_get_sqe(ring)
                L.io_uring_prep_write(sqe, fd, data, number * 300)
                sqe.flags = L.IOSQE_IO_LINK | L.IOSQE_CQE_SKIP_SUCCESS
                sqe = L.io_uring_get_sqe(ring)
                L.io_uring_prep_fsync(sqe, fd, L.IORING_FSYNC_DATASYNC)
                L.io_uring_submit(ring)
                poll.poll()
                os.eventfd_read(efd)
                L.io_uring_peek_cqe(ring, cqe)
                entry = cqe[0]
                if entry.res != 0:
                    raise OSError(-entry.res, os.strerror(-entry.res))
                L.io_uring_cqe_seen(ring, entry)
            times.append((time.perf_counter_ns() - t0) / 1e3)
    finally:
        os.close(fd)
        path.unlink()
        os.close(efd)
        L.io_uring_queue_exit(ring)
    return times


def main() -> None:
    """Run the rounds alternated and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lone-events", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=0.5)
    parser.add_argument("--events", type=int, default=32_000)
    parser.add_argument("--producers", type=int, default=32)
    parser.add_argument("--modes", default="thread,uring,uring-async")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the journals go (default: a temporary folder)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    results: dict[str, Result] = {mode: {} for mode in modes}
    floors: list[tuple[float, float]] = []
    paused: dict[str, list[float]] = {"plain": [], "ring": []}
    with tempfile.TemporaryDirectory(prefix="bench-uring-", dir=args.folder) as tmp:
        for number in range(args.rounds):
            for mode in modes if number % 2 == 0 else reversed(modes):
                run_mode(mode, Path(tmp) / f"{mode}-{number}", args, results[mode])
            floors.append(fdatasync_floor(Path(tmp), args.lone_events))
            for how in ("plain", "ring") if number % 2 == 0 else ("ring", "plain"):
                paused[how] += floor(Path(tmp), how, args.lone_events, args.gap_ms / 1e3)
    gap = f"{args.gap_ms:g} ms"
    print(f"floor: append 300 B + fdatasync back to back p50 "
          f"{statistics.median(f[0] for f in floors) * 1e3:.0f} µs, p99 "
          f"{statistics.median(f[1] for f in floors) * 1e3:.0f} µs; over zeros after a {gap} "
          f"pause p50 {_pct(paused['plain'], 0.5):.0f} µs, p99 {_pct(paused['plain'], 0.99):.0f}"
          f" µs; the same through the ring p50 {_pct(paused['ring'], 0.5):.0f} µs, p99 "
          f"{_pct(paused['ring'], 0.99):.0f} µs ({args.rounds} rounds)")
    keys = sorted({key for result in results.values() for key in result},
                  key=lambda k: (not k.startswith("lone"), k))
    print(f"{'':<40}" + "".join(f"{mode:>22}" for mode in modes))
    for key in keys:
        cells = []
        for mode in modes:
            values = results[mode].get(key)
            if not values:
                cells.append(f"{'-':>22}")
            elif key == "lone µs":
                cells.append(f"{_pct(values, 0.5):>8.0f} / p99 {_pct(values, 0.99):>6.0f}")
            else:
                cells.append(f"{statistics.median(values):>22.2f}")
        label = "lone commit p50 / p99 µs" if key == "lone µs" else key
        print(f"{label:<40}" + "".join(cells))
    print(f"(medians of {args.rounds} rounds; lone: {args.lone_events} commits a round, each "
          f"after a {gap} pause, the pauses' own cost subtracted; burst: {args.events} events "
          f"from {args.producers} coroutines)")


if __name__ == "__main__":
    main()
