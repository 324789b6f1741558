"""Where a slow request at one connection waits: per-phase timestamps in a bench server.

Installed in a ``bench/http.py`` server child with ``--trace-slow`` (never in
the guard itself). Between two signals from the bench it records, with
``time.perf_counter`` (CLOCK_MONOTONIC, the same clock in every process):

* each request: when the app is called, when ``http.response.start`` leaves the
  middleware, when the body is sent (at one connection, back to back, the time
  from one request's end to the next one's call is the client's turnaround
  plus the server's read and parse);
* the cyclic collector's collections (generation, start, end) via ``gc.callbacks``;
* the event loop's waits for the interpreter lock: the loop's ``epoll_wait``
  runs in a small C helper that notes when the kernel returned, so the time
  until Python runs again is the wait for the lock;
* the journal writer's ``fdatasync``: its own duration (C side) and the wait for
  the lock after it, and the writer thread's CPU and run-queue wait during it
  (its ``/proc/thread-self/schedstat`` before and after): the rest of the sync's
  time it slept, waiting for the disk;
* per request, the CPU and run-queue wait of the loop, the writer, an in-process
  indexer and the index child's threads (``/proc/.../schedstat``), and the SQLite
  store file's size (it grows while a checkpoint copies the index's WAL into it);
* the journal writer's hand-over to the loop (``call_soon_threadsafe``) and
  when the loop settles the futures;
* the indexer's reads (decode) and store transactions.

:func:`report` then prints, for the slowest 1 % of request cycles, their phases
and what overlapped them, against the same counts over all cycles.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import gc
import itertools
import json
import os
import selectors
import statistics
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_C = r"""
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
int timed_epoll_wait(int epfd, int timeout_ms, double *out) {
    struct epoll_event ev[1];
    int n = epoll_wait(epfd, ev, 0 + 1, timeout_ms);
    *out = now();
    return n;
}
int timed_fdatasync(int fd, double *began, double *out) {
    *began = now();
    int rc = fdatasync(fd);
    *out = now();
    return rc;
}
"""


def _helper(workdir: Path) -> ctypes.CDLL:
    source, lib = workdir / "trace_helper.c", workdir / "trace_helper.so"
    if not lib.exists():
        source.write_text(_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(source)],
                       check=True)
    helper = ctypes.CDLL(str(lib))  # ctypes releases the interpreter lock around each call
    helper.timed_epoll_wait.argtypes = (ctypes.c_int, ctypes.c_int,
                                        ctypes.POINTER(ctypes.c_double))
    helper.timed_fdatasync.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                                       ctypes.POINTER(ctypes.c_double))
    return helper


class Recorder:
    """The buffers of one server process (appends only: atomic under the lock)."""

    def __init__(self) -> None:
        self.on = False
        self.requests: list[tuple[float, float, float]] = []
        # at each request's call: per thread (loop, writer, indexer) its CPU and run-queue
        # wait so far, ns (/proc/PID/task/TID/schedstat)
        self.sched: list[tuple[int, ...]] = []
        self._sched_fds: list[int] = []
        self._child_fds: list[int] = []  # the index child's threads (summed as "child")
        self.sched_names: list[str] = []  # what each pair of ``sched`` values is
        # at each request's call: the SQLite store file's size (it grows while a checkpoint
        # of the index's WAL copies pages into it)
        self.store_size: list[int] = []
        self._store_fd = -1
        self.collections: list[tuple[int, float, float, str, int]] = []  # + thread, collected
        self.loop_waits: list[tuple[float, float]] = []  # (kernel returned, Python resumed)
        self.syncs: list[tuple[float, float, float]] = []  # (began, synced, Python resumed)
        # per sync, the writer thread's CPU and run-queue wait during it, s (its schedstat):
        # the rest of the sync's time it slept, waiting for the disk
        self.sync_split: list[tuple[float, float]] = []
        self.handovers: list[float] = []  # writer calls call_soon_threadsafe
        self.settles: list[float] = []  # the loop settles a batch's futures
        self.promoted: list[tuple[str, int, list[tuple[str, int]]]] = []  # gen1: to gen2
        self.reads: list[tuple[float, float, int]] = []  # indexer decode
        self.indexes: list[tuple[float, float, int]] = []  # indexer store transaction
        self._gc_began = 0.0

    def clear(self) -> None:
        for _name, value in vars(self).items():
            if isinstance(value, list):
                value.clear()

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            if self.on and info["generation"] == 1:  # what this collection promotes to gen2
                import collections
                import threading

                young = gc.get_objects(0) + gc.get_objects(1)
                top = collections.Counter(type(o).__qualname__ for o in young).most_common(6)
                self.promoted.append((threading.current_thread().name, len(young), top))
                del young
            self._gc_began = time.perf_counter()
        elif self.on:
            import threading

            self.collections.append((info["generation"], self._gc_began, time.perf_counter(),
                                     threading.current_thread().name, info["collected"]))

    def dump(self, path: Path) -> None:
        data = {name: value for name, value in vars(self).items()
                if isinstance(value, list) and not name.startswith("_")}
        part = path.with_suffix(".part")
        part.write_text(json.dumps(data))
        part.rename(path)


def install(kind: str, workdir: Path, label: str
            ) -> tuple[Callable[[Any], Any], Callable[[], None], Callable[[], None]]:
    """Instrument this server process; the ASGI wrapper, and what starts and ends a trace.

    The end writes ``trace-LABEL.json``.

    Args:
        kind: What the server serves (the guard's parts are traced unless plain or noop).
        workdir: Where the C helper is built and ``trace-LABEL.json`` written.
        label: The server's name in the bench.
    """
    rec = Recorder()
    helper = _helper(workdir)
    gc.callbacks.append(rec.gc_callback)

    def start() -> None:
        import threading

        rec.clear()
        for fd in rec._sched_fds + rec._child_fds:
            os.close(fd)
        by_name = {t.name: t.native_id for t in threading.enumerate()}
        tids = [os.getpid(), by_name.get("audit-journal-writer"), by_name.get("audit-indexer")]
        paths = [f"/proc/self/task/{tid}/schedstat" for tid in tids if tid is not None]
        # the index child's threads (audit.index = "auto"; `guard audit index`), summed
        rec._child_fds = []
        for task in Path("/proc/self/task").iterdir():
            for child in (task / "children").read_text().split():
                for ctask in Path(f"/proc/{child}/task").iterdir():
                    with contextlib.suppress(OSError):
                        rec._child_fds.append(os.open(ctask / "schedstat", os.O_RDONLY))
        rec._sched_fds = [os.open(p, os.O_RDONLY) for p in paths]
        rec.sched_names = [name for name, tid in zip(
            ("loop", "writer", "indexer"), tids, strict=True) if tid is not None]
        rec.sched_names += ["child"] if rec._child_fds else []
        if rec._store_fd < 0 and (workdir / f"audit-{label}.db").exists():
            rec._store_fd = os.open(workdir / f"audit-{label}.db", os.O_RDONLY)
        rec.on = True

    def dump() -> None:
        rec.on = False
        rec.dump(workdir / f"trace-{label}.json")

    # The loop's epoll_wait in C, noting when the kernel returned.
    ret = ctypes.c_double()
    base_select = selectors.EpollSelector.select

    def select(self: selectors.EpollSelector, timeout: float | None = None) -> Any:
        if timeout is not None and timeout <= 0:
            return base_select(self, timeout)
        ms = -1 if timeout is None else max(1, int(timeout * 1000 + 0.999))
        helper.timed_epoll_wait(self.fileno(), ms, ctypes.byref(ret))
        resumed = time.perf_counter()
        if rec.on:
            rec.loop_waits.append((ret.value, resumed))
        return base_select(self, 0)

    selectors.EpollSelector.select = select  # type: ignore[method-assign]

    # fdatasync: its own time and the lock wait after it (the journal writer's only sync).
    began, synced = ctypes.c_double(), ctypes.c_double()

    mine = threading.local()  # each syncing thread's own schedstat, opened once

    def fdatasync(fd: int) -> None:
        if not rec.on:
            if helper.timed_fdatasync(fd, ctypes.byref(began), ctypes.byref(synced)) != 0:
                raise OSError(ctypes.get_errno(), "fdatasync failed")
            return
        if not hasattr(mine, "stat"):
            mine.stat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        before = os.pread(mine.stat, 100, 0).split()[:2]
        if helper.timed_fdatasync(fd, ctypes.byref(began), ctypes.byref(synced)) != 0:
            raise OSError(ctypes.get_errno(), "fdatasync failed")
        after = os.pread(mine.stat, 100, 0).split()[:2]
        rec.syncs.append((began.value, synced.value, time.perf_counter()))
        rec.sync_split.append(((int(after[0]) - int(before[0])) * 1e-9,
                               (int(after[1]) - int(before[1])) * 1e-9))

    os.fdatasync = fdatasync  # the bench server only

    if kind != "plain" and kind != "noop":
        from guard.audit import _indexer, _jwriter

        base_release = _jwriter.JournalWriter._release
        base_settle = _jwriter._Waker.settle

        def release(self: Any, items: list[Any]) -> None:
            if rec.on and items:
                rec.handovers.append(time.perf_counter())
            base_release(self, items)

        def settle(self: Any) -> None:  # the loop resolves a batch's futures
            if rec.on:
                rec.settles.append(time.perf_counter())
            base_settle(self)

        _jwriter.JournalWriter._release = release  # type: ignore[method-assign]
        _jwriter._Waker.settle = settle  # type: ignore[method-assign]

        base_read = _indexer.Indexer._read

        def read(self: Any) -> Any:
            t0 = time.perf_counter()
            out = base_read(self)
            if rec.on:  # a list of records, or (rows, checkpoints)
                count = len(out) if isinstance(out, list) else len(out[0])
                rec.reads.append((t0, time.perf_counter(), count))
            return out

        _indexer.Indexer._read = read  # type: ignore[method-assign]
        from guard.audit import _sqlite

        for name in ("index", "index_records"):  # rows, or the records' bytes
            base_index = getattr(_sqlite.SqliteStore, name, None)
            if base_index is None:
                continue

            def index(self: Any, rows: Any, *args: Any, _base: Any = base_index,
                      **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                out = _base(self, rows, *args, **kwargs)
                if rec.on:
                    rec.indexes.append((t0, time.perf_counter(), len(rows)))
                return out

            setattr(_sqlite.SqliteStore, name, index)

    def wrap(app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] == "/healthz" or not rec.on:
                await app(scope, receive, send)
                return
            t_in = time.perf_counter()
            stats: list[int] = []
            for fd in rec._sched_fds:
                stats += [int(v) for v in os.pread(fd, 100, 0).split()[:2]]
            if rec._child_fds:
                cpu = wait = 0
                for fd in rec._child_fds:
                    with contextlib.suppress(OSError):  # a thread that ended
                        c, w = os.pread(fd, 100, 0).split()[:2]
                        cpu, wait = cpu + int(c), wait + int(w)
                stats += [cpu, wait]
            rec.sched.append(tuple(stats))
            if rec._store_fd >= 0:
                rec.store_size.append(os.fstat(rec._store_fd).st_size)
            t_start = 0.0

            async def timed_send(message: dict[str, Any]) -> None:
                nonlocal t_start
                if message["type"] == "http.response.start":
                    t_start = time.perf_counter()
                await send(message)

            await app(scope, receive, timed_send)
            rec.requests.append((t_in, t_start, time.perf_counter()))

        return traced

    return wrap, start, dump


def _overlap(spans: list[tuple[float, float]], a: float, b: float) -> list[tuple[float, float]]:
    return [(s, e) for s, e in spans if s < b and e > a]


def report(path: Path, label: str, share: float = 0.01) -> None:
    """Print the slowest ``share`` of request cycles of a trace and what overlapped them."""
    data = json.loads(path.read_text())
    reqs = data["requests"]
    if len(reqs) < 100:
        print(f"trace {label}: only {len(reqs)} requests")
        return
    sched = data["sched"]
    cycles = []  # (cycle, app, send, gap, start, end, per thread (cpu, run-queue wait) s)
    for i, ((t_in, t_start, t_done), nxt) in enumerate(itertools.pairwise(reqs)):
        deltas = tuple((b - a) * 1e-9 for a, b in zip(sched[i], sched[i + 1], strict=True))
        cycles.append((nxt[0] - t_in, t_start - t_in, t_done - t_start, nxt[0] - t_done,
                       t_in, nxt[0], deltas))
    grew = data.get("store_size") or []
    if len(grew) == len(reqs):  # cycles in which the store file grew: a WAL checkpoint's copy
        checkpointing = {reqs[i][0] for i in range(len(reqs) - 1) if grew[i + 1] != grew[i]}
    else:
        checkpointing = set()
    cycles.sort()
    slow = cycles[-max(1, int(len(cycles) * share)):]
    gcs = [(g, s, e) for g, s, e, _, _ in data["collections"]]
    full = [(round((e - s) * 1e3, 1), who) for g, s, e, who, _ in data["collections"] if g == 2]
    waits = [(k, p) for k, p in data["loop_waits"]]
    syncs = data["syncs"]
    split = data.get("sync_split") or [(0.0, 0.0)] * len(syncs)
    # per sync: (wall, its run-queue wait, the rest slept: the disk)
    parts = [(e - b, q, max(0.0, e - b - c - q)) for (b, e, _), (c, q) in zip(syncs, split,
                                                                              strict=True)]
    settle_delay = []
    settles = sorted(data["settles"])
    for h in data["handovers"]:
        i = bisect.bisect_left(settles, h)
        if i < len(settles):
            settle_delay.append(settles[i] - h)
    ix = [(s, e) for s, e, _ in data["indexes"]] + [(s, e) for s, e, _ in data["reads"]]

    def describe(a: float, b: float) -> dict[str, float]:
        g = [(gen, e - s) for gen, s, e in gcs if s < b and e > a]
        w = [p - k for k, p in waits if a <= p <= b]
        sy = [(sy_e - sy_b, r - sy_e) for sy_b, sy_e, r in syncs if a <= r <= b]
        sp = [p for (_, _, r), p in zip(syncs, parts, strict=True) if a <= r <= b]
        return {"ckpt": 1.0 if a in checkpointing else 0.0,
                "sync_rq": max((p[1] for p in sp), default=0.0),
                "sync_disk": max((p[2] for p in sp), default=0.0),
                "gc2": sum(d for gen, d in g if gen == 2),
                "gc01": sum(d for gen, d in g if gen < 2),
                "gil_loop": max(w, default=0.0), "sync": max((s for s, _ in sy), default=0.0),
                "gil_writer": max((r for _, r in sy), default=0.0),
                "index": sum(min(e, b) - max(s, a) for s, e in _overlap(ix, a, b))}

    def ms(x: float) -> str:
        return f"{x * 1e3:6.2f}"

    n = len(cycles)
    print(f"trace {label}: {n} cycles, p50 {ms(cycles[n // 2][0])} ms, "
          f"p99 {ms(cycles[int(n * 0.99)][0])} ms; gc collections gen0/1/2: "
          + "/".join(str(sum(1 for g, _, _ in gcs if g == k)) for k in range(3))
          + f", gen2 (ms, thread) {full}")
    all_d = [describe(c[4], c[5]) for c in cycles]
    if data["promoted"]:
        by: dict[str, int] = {}
        for who, count, _ in data["promoted"]:
            by[who] = by.get(who, 0) + count
        biggest = max(data["promoted"], key=lambda p: p[1])
        print(f"  young objects promoted to gen2 by the {len(data['promoted'])} gen1 "
              f"collections: {sum(by.values())} (by thread {by}); largest {biggest}")
    print(f"  loop lock wait after epoll: p50 {ms(statistics.median([p - k for k, p in waits]))}"
          f" p99 {ms(sorted(p - k for k, p in waits)[int(len(waits) * 0.99)])} "
          f"max {ms(max(p - k for k, p in waits))} ms ({len(waits)} wake-ups)")
    if syncs:
        ss = sorted(e - b for b, e, _ in syncs)
        gw = sorted(r - e for _, e, r in syncs)
        print(f"  fdatasync (C side) p50 {ms(ss[len(ss) // 2])} p99 {ms(ss[int(len(ss) * .99)])}"
              f" max {ms(ss[-1])} ms; writer's lock wait after it p50 {ms(gw[len(gw) // 2])} "
              f"p99 {ms(gw[int(len(gw) * .99)])} max {ms(gw[-1])} ms ({len(ss)} syncs)")
        if data.get("sync_split"):
            rq = sorted(p[1] for p in parts)
            disk = sorted(p[2] for p in parts)
            print(f"  fdatasync split (writer's schedstat): run-queue wait p50 "
                  f"{ms(rq[len(rq) // 2])} p99 {ms(rq[int(len(rq) * .99)])} max {ms(rq[-1])}"
                  f" ms; asleep (the disk) p50 {ms(disk[len(disk) // 2])} p99 "
                  f"{ms(disk[int(len(disk) * .99)])} max {ms(disk[-1])} ms")
    if settle_delay:
        sd = sorted(settle_delay)
        print(f"  hand-over writer -> loop settles: p50 {ms(sd[len(sd) // 2])} "
              f"p99 {ms(sd[int(len(sd) * .99)])} max {ms(sd[-1])} ms")
    if data["indexes"]:
        dur = sorted(e - s for s, e, _ in data["indexes"])
        rd = sorted(e - s for s, e, _ in data["reads"])
        print(f"  indexer: {len(dur)} transactions, p50 {ms(dur[len(dur) // 2])} "
              f"max {ms(dur[-1])} ms; reads p50 {ms(rd[len(rd) // 2])} max {ms(rd[-1])} ms")
    keys = ("gc2", "gc01", "gil_loop", "sync", "sync_rq", "sync_disk", "gil_writer", "index",
            "ckpt")
    threshold = 0.001

    def rate(ds: list[dict[str, float]], key: str) -> str:
        return f"{sum(1 for d in ds if d[key] > threshold) / len(ds):5.1%}"

    slow_d = [describe(c[4], c[5]) for c in slow]
    print(f"  share of cycles with > 1 ms of each (ckpt: the store file grew) (slowest "
          f"{len(slow)} / all): "
          + ", ".join(f"{k} {rate(slow_d, k)} / {rate(all_d, k)}" for k in keys))
    print(f"  slowest {len(slow)} cycles, ms: cycle = app (call -> response start) + send + "
          "gap (-> next call); overlapping: gen2 / gen0-1 collections, the loop's longest lock "
          "wait, the longest fdatasync and the writer's lock wait after it, indexer busy")
    threads = tuple(data.get("sched_names") or ("loop", "writer", "indexer"))[
        :len(cycles[0][6]) // 2]
    print("  per thread, CPU and run-queue wait (preempted or not yet scheduled) per cycle, ms,"
          " slowest / all: " + ", ".join(
              f"{name} CPU {ms(statistics.mean(c[6][2 * k] for c in slow))} / "
              f"{ms(statistics.mean(c[6][2 * k] for c in cycles))}, wait "
              f"{ms(statistics.mean(c[6][2 * k + 1] for c in slow))} / "
              f"{ms(statistics.mean(c[6][2 * k + 1] for c in cycles))}"
              for k, name in enumerate(threads)))
    print("    cycle    app   send    gap |   gc2  gc0-1  gil_loop  sync (rq  disk)  gil_wr"
          "  index |"
          + "".join(f" {name[:6]:>6} cpu/wait" for name in threads))
    for c in slow[::-1][:30]:
        d = describe(c[4], c[5])
        print(f"   {ms(c[0])} {ms(c[1])} {ms(c[2])} {ms(c[3])} | {ms(d['gc2'])} {ms(d['gc01'])}"
              f"  {ms(d['gil_loop'])}  {ms(d['sync'])} ({ms(d['sync_rq'])} {ms(d['sync_disk'])})"
              f" {ms(d['gil_writer'])} {ms(d['index'])} |"
              + "".join(f"  {ms(c[6][2 * k])}/{ms(c[6][2 * k + 1])}"
                        for k in range(len(threads))))
