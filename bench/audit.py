"""Durable audit throughput into the journal, the index lag behind it, and subject-report latency.

For SQLite and PostgreSQL: 64 producers (threads calling ``record_fields``, or
coroutines awaiting ``start_fields``) record into the journal; each run prints
durable events/s, the index lag (durable -> in the store) and the CPU per event
of the writer, the indexer and the producers, median of ``--rounds`` runs,
beside the disk's floor (append + fdatasync) measured in the same run, and the
journal alone (no indexer in the process) with its floor, ``(floor)``, a writer that
appends pre-made records (the same hand-over, thread and sync with no per-event
work), rounds alternated, and ``external``: 64 tasks whose
journal ``guard audit index`` indexes from another process (its CPU is that
process's), and ``child``: 64 tasks whose trail starts its indexer as a child
process (``audit.index = "auto"`` at SQLite; its CPU is the child's). Then the
right-of-access report for one data subject over ``--report-events`` bulk-loaded
events.

Usage: python bench/audit.py [--quick] [--events N] [--rounds 3] [--report-events N]
                              [--no-postgres] [--alone] [--modes threads,tasks,external,child]
                              [--report-only] [--report-hours H]

``--report-only`` runs only the subject report; ``--report-hours`` spreads its events
evenly over that many hours (a year: 8760), where by default they fall in 1,680 hours.

``--alone`` runs only the journal alone (the disk's floor, then 64 tasks into a journal
with no store, and, rounds alternated, the same into a writer that appends pre-made
records: the floor of Python's loop, thread and ``fdatasync`` with no per-event work),
for comparing writer changes (run it with ``PYTHONPATH`` at each tree).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import psycopg
from _pg import fdatasync_floor, fresh_database, pg_server

from guard.audit import (
    EventKind,
    Store,
    derive_chain_key,
    load_signing_key,
    open_store,
    pseudonymise,
    subject_report,
)
from guard.audit._event import TS_FORMAT
from guard.audit._schema import EVENT_COLUMNS, INSERT_EVENT, fill_subject_index

if TYPE_CHECKING:
    from guard.audit._jwriter import JournalWriter

KEY = b"b" * 32
START = datetime(2025, 1, 1, tzinfo=UTC)
CHAIN_KEY = derive_chain_key(KEY)  # trails are keyed, as JournalTrail makes them


def run_threads(writers: int, work: Callable[[int], None]) -> float:
    """Run ``work(i)`` on ``writers`` threads at once; return the elapsed seconds."""
    start = threading.Barrier(writers + 1)

    def body(i: int) -> None:
        start.wait()
        work(i)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def bulk_rows(n: int, subjects: int, hours: int = 0) -> tuple[Iterator[tuple[object, ...]], str]:
    """``n`` plausible decision rows over ``subjects`` people (made as they are read, so
    10,000,000 fit in memory); the pseudonym of one of them. ``hours``: the rows spread
    evenly over that many hours from 2025-01-01 (else over 1,680 hours of 2026)."""
    pseudonyms = [pseudonymise(KEY, f"subject-{i}") for i in range(subjects)]
    callers = ["svc:crm", "svc:billing", "svc:marketing", "proc:mailer", "svc:support"]
    purposes = ["relationship.management", "order.processing", "marketing.advertising",
                "marketing.advertising", "rights.request"]

    def rows() -> Iterator[tuple[object, ...]]:
        for i in range(n):
            c = i % 5
            ts = (f"2026-{1 + i * 10 // n:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00."
                  f"{i % 999999:06d}Z") if not hours else (
                START + timedelta(seconds=i * hours * 3600 / n)).strftime(TS_FORMAT)
            yield (f"{i:032x}", "decision", ts, callers[c], "internal", "GB", purposes[c],
                   '["contact.email"]', "read", int(i % 7 != 0),
                   "allowed" if i % 7 else "category_not_granted", "[]", '["contract"]',
                   "sha256:bench", pseudonyms[(i * 7919) % subjects], "GET", "/c/{id}", None,
                   None, None, 40, None, None, "bulk", i + 1, "", "")

    return rows(), pseudonyms[7]


def load_sqlite(path: Path, rows: Iterable[tuple[object, ...]]) -> None:
    import sqlite3

    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(INSERT_EVENT, rows)
    fill_subject_index(conn.execute)  # the index adds its own rows' tokens; these went around it
    conn.execute("COMMIT")
    conn.close()


def load_postgres(url: str, rows: Iterable[tuple[object, ...]]) -> None:
    store = open_store(url)
    store.rows("SELECT 1")  # creates the schema
    store.close()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY audit_event ({EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE audit_event")


def time_report(store: Store, pseudonym: str, runs: int = 20) -> tuple[float, float, int]:
    subject_report(store, pseudonym)  # warm the cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        report = subject_report(store, pseudonym)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], len(report.accesses)


# -- the journal ------------------------------------------------------------------------------

JOURNAL_FIELDS = {"caller": "svc:crm", "party_type": "internal", "country": "GB",
                  "purpose": "relationship.management",
                  "categories": ("contact.email", "identity.name"), "action": "read",
                  "allowed": True, "reason": "allowed", "rule": ("rules.csv:314",),
                  "lawful_basis": ("contract", "legitimate_interest"),
                  "policy_version": "sha256:5d79139ff05f0ad3", "http_method": "GET",
                  "http_route": "/customers/{id}", "latency_us": 40}


def process_cpu_us(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in µs (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") * 1e6


def thread_cpu_us(thread: threading.Thread) -> float:
    """CPU time a thread of this process has used so far, in µs (Linux schedstat)."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e3


class JournalResult(NamedTuple):
    """One journal run: durable events/s, index lag (ms) and CPU per event (µs) by thread."""

    rate: float
    lag_p50: float
    lag_p99: float
    lag_max: float
    writer_us: float
    indexer_us: float
    producers_us: float


def journal_run(url: str, key: Path, folder: Path, n: int, producers: int, mode: str
                ) -> JournalResult:
    """Durable events/s of ``n`` events from ``producers`` threads or tasks into the journal.

    Also the index lag (durable -> in the store) and the CPU per event of the writer
    thread, the indexer thread and the producers (the calling thread for tasks; all
    producer threads for threads).
    """
    from guard.audit._indexer import Indexer
    from guard.audit._jtrail import JournalTrail
    from guard.audit._store import indexed_offset
    from guard.config import AuditSettings

    external = mode == "external"  # tasks, indexed by `guard audit index` in another process
    hmac = key.with_name("subject-hmac.key")
    if not hmac.exists():
        hmac.write_text(KEY.hex() + "\n")
    trail = JournalTrail(AuditSettings(  # child: audit.index auto; else external
        store=url, signing_key=key, hmac_key=hmac, journal=folder,
        index="auto" if mode == "child" else "external"))
    # threads, tasks: the lane's indexer on a thread of this process (what `guard audit index`
    # runs for each lane)
    indexer = Indexer(trail.journal.folder, trail.store) if mode in ("threads", "tasks") else None
    if trail.child is not None:
        trail.flush()  # the child runs
    follower = subprocess.Popen(
        [sys.executable, "-c", "from guard.cli import main; main()", "audit", "index",
         "--store", url, "--journal", str(folder), "--every", "1"],
        env={**os.environ, "GUARD_CONFIG": os.devnull}, stdout=subprocess.PIPE,
    ) if external else None
    if follower is not None and follower.stdout is not None:
        follower.stdout.readline()  # it runs
    durable: list[tuple[float, int]] = []  # (when, journal end) after each append
    trail.writer._committed += (lambda _r, _c: durable.append(
        (time.perf_counter(), trail.journal.next_offset)),)
    indexed: list[tuple[float, int]] = []
    stop = threading.Event()
    key_id = trail.journal.journal_id

    def sample() -> None:
        while not stop.is_set():
            if indexer is not None:
                indexed.append((time.perf_counter(), indexer.offset))
            else:  # from the store, as another process sees it (every 5 ms: the GIL is shared)
                indexed.append((time.perf_counter(), indexed_offset(trail.store, key_id)))
                time.sleep(0.003)
            time.sleep(0.002)

    def indexer_us() -> float:
        if follower is not None or trail.child is not None:
            return process_cpu_us(follower.pid if follower is not None else trail.child.pid)
        assert indexer is not None
        return thread_cpu_us(indexer._thread)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    per = n // producers
    fields = [{**JOURNAL_FIELDS, "subject_id": f"c{i}"} for i in range(per)]
    writer0 = thread_cpu_us(trail.writer._thread)
    indexer0 = indexer_us()
    t0 = time.perf_counter()
    if mode == "threads":
        spent: list[float] = []

        def work(_i: int) -> None:
            c0 = time.thread_time()
            for f in fields:
                trail.record_fields(EventKind.DECISION, f)
            spent.append(time.thread_time() - c0)
        elapsed = run_threads(producers, work)
        producers_s = sum(spent)
    else:
        async def one() -> None:
            for f in fields:
                await trail.start_fields(EventKind.DECISION, f)

        async def every() -> None:
            await asyncio.gather(*(one() for _ in range(producers)))

        c0 = time.thread_time()
        asyncio.run(every())
        producers_s = time.thread_time() - c0
        elapsed = time.perf_counter() - t0
    writer_us = thread_cpu_us(trail.writer._thread) - writer0
    trail.flush(120)
    indexer_spent = indexer_us() - indexer0
    stop.set()
    sampler.join()
    trail.writer.close()  # its closing checkpoint indexed before the store closes
    if indexer is not None:
        indexer.close()
    trail.close()
    if follower is not None:
        follower.terminate()
        follower.wait(60)
    lags = []
    j = 0
    for when, end in durable:  # when did the index first reach this end?
        while j < len(indexed) and indexed[j][1] < end:
            j += 1
        if j < len(indexed):
            lags.append(max(0.0, indexed[j][0] - when))
    lags.sort()
    if not lags:
        lags = [0.0]
    events = per * producers
    return JournalResult(events / elapsed, lags[len(lags) // 2] * 1e3,
                         lags[int(len(lags) * 0.99)] * 1e3, lags[-1] * 1e3,
                         writer_us / events, indexer_spent / events, producers_s * 1e6 / events)


def journal_alone_run(key: Path, folder: Path, n: int, producers: int, floor: bool = False
                      ) -> tuple[float, float]:
    """Durable events/s of tasks into a journal with no indexer in the process (as with an
    index follower in another process); also the writer thread's CPU µs per event.

    ``floor``: the writer appends a pre-made record per event and does no per-event work
    (``bench/writer.py``'s ``FloorWriter``): the same hand-over, thread and ``fdatasync``."""
    from guard.audit._fields import ChainKey
    from guard.audit._journal import open_lane
    from guard.audit._jwriter import JournalWriter

    if floor:
        from writer import FloorWriter as JournalWriter  # type: ignore[assignment]
    journal = open_lane(folder)
    writer = JournalWriter(journal, hmac_key=KEY, signing_key=load_signing_key(key),
                           writer_id="bench", chain_key=ChainKey(CHAIN_KEY))
    try:
        return producers_into(writer, n, producers)
    finally:
        writer.close()
        journal.close()


def producers_into(writer: JournalWriter, n: int, producers: int) -> tuple[float, float]:
    """Events/s of ``producers`` event-loop tasks recording ``n`` decisions in all through
    ``writer`` (a started journal writer), and its thread's CPU µs an event."""
    per = n // producers
    fields = [{**JOURNAL_FIELDS, "subject_id": f"c{i}"} for i in range(per)]

    async def one() -> None:
        for f in fields:
            await writer.start(EventKind.DECISION, f)

    async def every() -> None:
        await asyncio.gather(*(one() for _ in range(producers)))

    cpu0 = thread_cpu_us(writer._thread)
    t0 = time.perf_counter()
    asyncio.run(every())
    elapsed = time.perf_counter() - t0
    cpu = thread_cpu_us(writer._thread) - cpu0
    return per * producers / elapsed, cpu / (per * producers)


def index_run(url: str, folder: Path) -> tuple[float, float]:
    """Index a whole written journal (lane-0 under ``folder``) into a fresh store, alone.

    Returns events/s and the indexer thread's CPU µs per record.
    """
    from guard.audit._indexer import Indexer
    from guard.audit._journal import Journal

    journal = Journal(folder / "lane-0")
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        indexer = Indexer(journal.folder, store)
        cpu0 = thread_cpu_us(indexer._thread)
        if not indexer.wait(journal.next_offset, 300):
            raise RuntimeError(f"index did not catch up: {indexer.failures.cause}")
        elapsed = time.perf_counter() - t0
        cpu = thread_cpu_us(indexer._thread) - cpu0
        indexer.close()
    finally:
        journal.close()
        store.close()
    return journal.next_offset / elapsed, cpu / journal.next_offset


def print_floor(tmp: Path) -> None:
    """The disk's fdatasync p50 / p99 in ``tmp`` and the ceiling it sets for 64 producers."""
    p50, p99 = fdatasync_floor(tmp)
    print(f"disk floor in {tmp}: append 300 B + fdatasync p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
          f"64 producers that each wait for their event share at most one sync per batch: "
          f"ceiling 64 / p50 = {64 / p50 * 1e3:,.0f} events/s")


def alone_bench(tmp: Path, key: Path, n: int, rounds: int) -> None:
    """The journal alone: durable events/s of 64 tasks and the writer's CPU per event; beside
    it, rounds alternated, the floor: the same with a writer that appends pre-made records."""
    print_floor(tmp)
    got: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    for rnd in range(rounds):
        got.append(journal_alone_run(key, tmp / f"alone{rnd}", n, 64))
        floor.append(journal_alone_run(key, tmp / f"floor{rnd}", n, 64, floor=True))
    for what, runs in (("journal alone", got), ("FLOOR (pre-made records)", floor)):
        print(f"{what}, 64 tasks, {n} events a run: "
              + ", ".join(f"{rate:,.0f}/s ({cpu:.2f} µs writer)" for rate, cpu in runs)
              + f"; median {statistics.median(g[0] for g in runs):,.0f}/s", flush=True)
    ratios = [a[0] / f[0] for a, f in zip(got, floor, strict=True)]
    print("journal alone / FLOOR, round by round: "
          + ", ".join(f"{r:.2f}" for r in ratios) + f"; median {statistics.median(ratios):.2f}")


def journal_bench(tmp: Path, key: Path, kinds: list[str], pg: str | None, n: int,
                  rounds: int, modes: list[str]) -> None:
    """The journal's durable events/s with 64 producers, index lag and rate, the disk's floor."""
    print_floor(tmp)
    print(f"journal: durable events/s, {n} events per run, "
          f"median of {rounds}; index lag = durable -> in the store (ms); CPU µs per event "
          "of the writer thread, the indexer thread and the producers")
    print(f"{'store':<11} {'producers':>9} {'mode':>8} {'events/s':>10} "
          f"{'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'writer':>7} {'indexer':>7} "
          f"{'produce':>7}")
    alone: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    for rnd in range(rounds):  # alternated
        alone.append(journal_alone_run(key, tmp / f"alone{rnd}", n, 64))
        floor.append(journal_alone_run(key, tmp / f"floor{rnd}", n, 64, floor=True))
    for what, runs, note in (("(none)", alone, "journal alone: no indexer in this process"),
                             ("(floor)", floor, "FLOOR: the writer appends pre-made records")):
        print(f"{what:<11} {64:>9} {'tasks':>8} "
              f"{statistics.median(a[0] for a in runs):>10,.0f} {'':>8} {'':>8} {'':>8} "
              f"{statistics.median(a[1] for a in runs):>7.1f}   ({note})", flush=True)
    for kind in kinds:
        folders: list[Path] = []
        for mode in modes:
            results = []
            for rnd in range(rounds):
                tag = f"j{kind}{mode}{rnd}"
                if kind == "sqlite":
                    url = f"sqlite:///{tmp / (tag + '.db')}"
                else:
                    assert pg is not None
                    url = fresh_database(pg, tag)
                results.append(journal_run(url, key, tmp / tag, n, 64, mode))
                folders.append(tmp / tag)
            med = [statistics.median(r[i] for r in results) for i in range(7)]
            print(f"{kind:<11} {64:>9} {mode:>8} {med[0]:>10,.0f} {med[1]:>8.1f} {med[2]:>8.1f} "
                  f"{med[3]:>8.1f} {med[4]:>7.1f} {med[5]:>7.1f} {med[6]:>7.1f}", flush=True)
        caught = []
        for number, folder in enumerate(folders[:rounds]):
            tag = f"i{kind}{number}"
            url = (f"sqlite:///{tmp / (tag + '.db')}" if kind == "sqlite"
                   else fresh_database(pg or "", tag))
            caught.append(index_run(url, folder))
        print(f"{kind:<11} index alone (a written journal into a fresh store): "
              f"{statistics.median(a[0] for a in caught):,.0f} events/s, indexer CPU "
              f"{statistics.median(a[1] for a in caught):.1f} µs per record", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (about a minute)")
    parser.add_argument("--events", type=int, default=None, help="events per throughput run")
    parser.add_argument("--report-events", type=int, default=1_000_000)
    parser.add_argument("--report-only", action="store_true",
                        help="only the subject report (no journal runs)")
    parser.add_argument("--report-hours", type=int, default=0,
                        help="the report's events spread over this many hours (0: 1,680)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per configuration (the median is shown)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--modes", default="threads,tasks,external,child",
                        help="producers and indexer: threads, tasks (index thread here), "
                             "external (`guard audit index` beside), child (audit.index auto "
                             "at SQLite: the trail's child process)")
    parser.add_argument("--alone", action="store_true",
                        help="only the journal alone (64 tasks, no store)")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="SECONDS",
                        help="sys.setswitchinterval for this process (the interpreter lock's "
                             "hand-over between the event loop and the writer; default 0.005)")
    args = parser.parse_args()
    from guard.audit import _sqlite  # nulls bound as in the index's own processes
    getattr(_sqlite, "bind_nulls_at_once", lambda: None)()  # (older trees: at import)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    n = args.events or (4_000 if args.quick else 20_000)
    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-audit-"))
    key = tmp / "sign.key"
    load_signing_key(key, create=True)

    try:
        if args.alone:
            alone_bench(tmp, key, max(n, 64_000), args.rounds)
            return
        with pg_server() as pg:
            if pg is None and not args.no_postgres:
                print("PostgreSQL not installed: SQLite only")
            kinds = ["sqlite"] + ([] if args.no_postgres or pg is None else ["postgresql"])
            if not args.report_only:
                journal_bench(tmp, key, kinds, pg, max(n, 64_000), args.rounds,
                              args.modes.split(","))

            m = args.report_events
            print(f"\nsubject report over {m:,} events (median / p95 of 20 runs)")
            for kind in kinds:
                rows, pseudonym = bulk_rows(m, max(1, m // 10), args.report_hours)
                t0 = time.perf_counter()
                if kind == "sqlite":
                    path = tmp / "report.db"
                    load_sqlite(path, rows)
                    store = open_store(f"sqlite:///{path}", create=False)
                else:
                    assert pg is not None
                    url = fresh_database(pg, "report")
                    load_postgres(url, rows)
                    store = open_store(url, create=False)
                loaded = time.perf_counter() - t0
                median, p95, count = time_report(store, pseudonym)
                store.close()
                print(f"{kind:<11} {median:7.2f} ms / {p95:7.2f} ms  ({count} accesses; "
                      f"bulk load {loaded:.0f} s)", flush=True)

    finally:
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
