"""Does the index's disk writing slow the journal's fdatasync? Lone commits, A/B in one run.

One event loop commits one event at a time (a pause of ``--gap-ms`` before each,
as requests at one connection) through the real journal writer, for
``--seconds`` per round, into one of several journal folders in turn (rounds
alternate, so every mode sees the same machine):

* ``none``: no index follows that journal;
* ``disk``: the index child of the service (:class:`ChildIndexer`, ``audit.index =
  "auto"``) follows it into an SQLite store beside the journal (as deployed);
* ``shm``: the same child with its store on ``/dev/shm`` (the same CPU, no disk
  writes): what ``disk`` costs beyond ``shm`` is the index's disk I/O;
* further ``LABEL=PRAGMA;PRAGMA`` modes (``--pragmas``): ``disk`` with these
  pragmas run on the child's store connection after its first transaction (a
  variant of the index's I/O).

``--prefill N`` first commits N events into each indexed journal (the store's WAL
then nears its checkpoint); the syncs during the children's checkpoints are
printed apart. ``--checkpoint-mib N`` instead times journal-like syncs while
another process fills an SQLite WAL of N MiB without syncing it and checkpoints
it, ``--rounds`` times. The run ends with the wake-up floor: a thread blocked on
an eventfd, woken after a pause.

Each journal ``fdatasync`` is split with the writer thread's own
``/proc/thread-self/schedstat`` read before and after it: its CPU, its wait in
the run queue once woken (scheduling, not the disk), and the rest, the time it
slept: the device's (``blocked``). Printed per mode: the lone commit's latency
(``start`` to the task resumed), the sync's wall time and each part (p50 / p99 /
p99.9), and the disk's writes and flushes during the rounds (``/sys/block``).

Usage: python bench/index_io.py [--seconds 4] [--rounds 3] [--gap-ms 0.3]
       [--modes none,disk,shm] [--pragmas "wal1k=PRAGMA wal_autocheckpoint=1000"]
       [--prefill 26000] [--checkpoint-mib 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from writer import FIELDS, writer

from guard.audit import EventKind
from guard.audit._follow import ChildIndexer
from guard.audit._journal import open_lane

_HOOK = """
import os
import time

_SQL = os.environ.pop("INDEX_IO_PRAGMAS", "")
_LOG = os.environ.pop("INDEX_IO_LOG", "")
if _LOG:
    from guard.audit import _sqlite

    _base = _sqlite.SqliteStore.index_records

    def index(self, *args, **kwargs):
        if _SQL and not getattr(self, "_io_pragmas", False):  # over the store's own
            self._io_pragmas = True
            for pragma in _SQL.split(";"):
                self._conn.execute(pragma)
        size = os.stat(self.path).st_size
        t0 = time.perf_counter()
        _base(self, *args, **kwargs)
        t1 = time.perf_counter()
        with open(_LOG, "a") as log:  # a transaction that grew the file held a checkpoint
            log.write(f"{t0} {t1} {size} {os.stat(self.path).st_size}\\n")

    _sqlite.SqliteStore.index_records = index
"""
SYNCS: list[tuple[float, float, float, float]] = []
"""Per journal fdatasync: wall, CPU, run-queue wait (s), when it began (perf_counter)."""
_fdatasync = os.fdatasync


def _sched() -> tuple[int, int]:
    with open("/proc/thread-self/schedstat", "rb") as f:
        cpu, wait, _ = f.read().split()
    return int(cpu), int(wait)


def timed_fdatasync(fd: int) -> None:
    """``os.fdatasync``, its wall time split by the thread's schedstat (installed here only)."""
    c0, w0 = _sched()
    t0 = time.perf_counter()
    _fdatasync(fd)
    t1 = time.perf_counter()
    c1, w1 = _sched()
    SYNCS.append((t1 - t0, (c1 - c0) * 1e-9, (w1 - w0) * 1e-9, t0))


def disk_stat(path: Path) -> tuple[int, int, int]:
    """Writes completed, sectors written and flushes of the block device holding ``path``."""
    dev = os.stat(path).st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    if not (name / "stat").exists():
        name = name.parent
    fields = [int(v) for v in (name / "stat").read_text().split()]
    return fields[4], fields[6], fields[15] if len(fields) > 15 else 0


class Mode:
    """One journal folder, its writer and (unless ``none``) its index child."""

    def __init__(self, label: str, root: Path, store_dir: Path | None, pragmas: str) -> None:
        self.label = label
        self.folder = root / label
        self.folder.mkdir()
        self.journal = open_lane(self.folder / "journal")
        self.writer = writer(self.journal)
        self.index: ChildIndexer | None = None
        self.db: Path | None = None
        self.log: Path | None = None
        if store_dir is not None:
            self.db = store_dir / f"audit-{label}.db"
            env = dict(os.environ)
            # the child logs its transactions; its store runs ``pragmas`` after the first
            hook = root / f"hook-{label}"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(_HOOK)
            os.environ["PYTHONPATH"] = os.pathsep.join(
                [str(hook), *filter(None, [env.get("PYTHONPATH")])])
            os.environ["INDEX_IO_PRAGMAS"] = pragmas
            self.log = hook / "transactions.log"
            os.environ["INDEX_IO_LOG"] = str(self.log)
            try:
                self.index = ChildIndexer(self.folder / "journal", f"sqlite:///{self.db}")
            finally:
                os.environ.clear()
                os.environ.update(env)
        self.latency: list[float] = []
        self.syncs: list[tuple[float, float, float, float]] = []
        self.disk = [0, 0, 0]
        self.index_cpu = 0.0
        self.events = 0

    def close(self) -> None:
        self.writer.close()
        self.journal.close()
        if self.index is not None:
            self.index.close()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process, its ended threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def commit_for(mode: Mode, seconds: float, gap: float) -> None:
    """Lone commits into ``mode``'s journal for ``seconds``."""
    w = mode.writer
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(gap)
        t0 = time.perf_counter()
        await w.start(EventKind.DECISION, FIELDS)
        mode.latency.append(time.perf_counter() - t0)
        mode.events += 1


def wakeup_floor(count: int, gap: float) -> list[float]:
    """A thread blocked on an eventfd, woken by this one after a pause of ``gap`` s: from the
    write to the woken thread running, s (the hand-over a commit makes twice)."""
    import threading

    fd, woke, done = os.eventfd(0), [], threading.Event()
    sent = [0.0]

    def wait() -> None:
        for _ in range(count):
            os.eventfd_read(fd)
            woke.append(time.perf_counter() - sent[0])
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    for _ in range(count):
        time.sleep(gap)
        sent[0] = time.perf_counter()
        os.eventfd_write(fd, 1)
        while len(woke) < _ + 1 and not done.is_set():
            time.sleep(0)
    thread.join()
    os.close(fd)
    return woke


_CHECKPOINT = """
import os, sqlite3, sys, time
path, mib, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, s TEXT, v BLOB)")
conn.execute("CREATE INDEX IF NOT EXISTS t_s ON t (s)")
fills = 0  # transactions that filled the WAL the first time (it is reused, not grown, after)
for _ in range(repeats):
    done = 0
    while (os.path.getsize(path + "-wal") < mib << 20) if not fills else done < fills:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (s, v) VALUES (?, ?)",
                         [(os.urandom(8).hex(), os.urandom(300)) for _ in range(500)])
        conn.execute("COMMIT")
        done += 1
    fills = fills or done
    time.sleep(1.0)
    t0 = time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    print(t0, time.perf_counter(), flush=True)
    time.sleep(1.0)
"""


def checkpoint_ab(root: Path, mib: int, repeats: int, gap: float) -> None:
    """Lone syncs of a journal-like file (written over zeros synced before) while another
    process fills an SQLite WAL to ``mib`` MiB without syncing and checkpoints it (as the
    index's store does at ``wal_autocheckpoint``): the syncs during the checkpoints and away."""
    import subprocess

    path = root / "zeros.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, bytes(64 << 20))
    os.fsync(fd)
    proc = subprocess.Popen([sys.executable, "-c", _CHECKPOINT, str(root / "ckpt.db"), str(mib),
                             str(repeats)], stdout=subprocess.PIPE, text=True)
    syncs: list[tuple[float, float, float, float]] = []
    offset = 0
    while proc.poll() is None:
        time.sleep(gap)
        os.pwrite(fd, b"x" * 300, offset)
        offset = (offset + 300) % (60 << 20)
        SYNCS.clear()
        timed_fdatasync(fd)
        syncs += SYNCS
    os.close(fd)
    assert proc.stdout is not None
    spans = [tuple(map(float, line.split())) for line in proc.stdout.read().splitlines()]
    for name, group in (
            ("during a checkpoint", [s for s in syncs if any(a <= s[3] <= b for a, b in spans)]),
            ("away from them", [s for s in syncs
                                if not any(a - 0.5 <= s[3] <= b + 0.5 for a, b in spans)])):
        wall = [s[0] for s in group]
        blocked = [max(0.0, w - c - q) for w, c, q, _ in group]
        print(f"  syncs {name}: {len(group)}; sync {pct(wall, .5):.3f} / {pct(wall, .99):.3f} "
              f"/ max {max(wall, default=0) * 1e3:.3f} ms; blocked {pct(blocked, .5):.3f} / "
              f"{pct(blocked, .99):.3f} / max {max(blocked, default=0) * 1e3:.3f} ms")
    print(f"  checkpoints of {mib} MiB: " + ", ".join(f"{(b - a) * 1e3:.0f}" for a, b in spans)
          + " ms")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=0.3)
    parser.add_argument("--modes", default="none,disk,shm")
    parser.add_argument("--pragmas", action="append", default=[], metavar="LABEL=SQL",
                        help="a disk mode whose store gets these ;-separated statements first")
    parser.add_argument("--prefill", type=int, default=0, metavar="N",
                        help="first commit N events into each indexed journal (the store's WAL "
                             "then nears its checkpoint: about 27,000 for the default's 32 MiB)")
    parser.add_argument("--checkpoint-mib", type=int, default=0, metavar="MIB",
                        help="instead: lone syncs while another process checkpoints an SQLite "
                             "WAL of MIB MiB, --rounds times")
    parser.add_argument("--dir", type=Path, default=None, help="the journal's parent folder "
                        "(default: the system's temporary folder; on the disk measured)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-index-io-", dir=args.dir))
    if args.checkpoint_mib:
        try:
            print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average "
                  f"{os.getloadavg()[0]:.2f}")
            checkpoint_ab(root, args.checkpoint_mib, args.rounds, args.gap_ms / 1e3)
            print(f"load average after {os.getloadavg()[0]:.2f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    shm = Path(tempfile.mkdtemp(prefix="bench-index-io-", dir="/dev/shm"))
    os.fdatasync = timed_fdatasync
    modes: list[Mode] = []
    try:
        for label in args.modes.split(","):
            store = None if label == "none" else shm if label == "shm" else root
            modes.append(Mode(label, root, store, ""))
        for spec in args.pragmas:
            label, sql = spec.split("=", 1)
            modes.append(Mode(label, root, root, sql))
        loop = asyncio.new_event_loop()
        async def first(m: Mode) -> None:  # the chain's opening checkpoint
            await m.writer.start(EventKind.DECISION, FIELDS)

        for m in modes:
            loop.run_until_complete(first(m))
        for m in modes:
            if m.index is not None and args.prefill:
                for _ in range(args.prefill // 1000):
                    m.writer.results(EventKind.DECISION, [FIELDS] * 1000)
        time.sleep(2.0 + args.prefill / 20_000)  # the children index what came before
        for m in modes:
            if m.log is not None and m.log.exists():
                m.log.unlink()
        load0 = os.getloadavg()[0]
        began = time.strftime("%H:%M", time.gmtime())
        for r in range(args.rounds):
            for m in modes[r % len(modes):] + modes[:r % len(modes)]:
                SYNCS.clear()
                d0 = disk_stat(root)
                c0 = _cpu(m.index.pid) if m.index else 0.0
                loop.run_until_complete(commit_for(m, args.seconds, args.gap_ms / 1e3))
                d1 = disk_stat(root)
                m.index_cpu += (_cpu(m.index.pid) if m.index else 0.0) - c0
                m.disk = [a + b - c for a, b, c in zip(m.disk, d1, d0, strict=True)]
                m.syncs += SYNCS
                time.sleep(0.5)  # the index catches up before the next mode's round
        print(f"{time.strftime('%Y-%m-%d', time.gmtime())} {began}-"
              f"{time.strftime('%H:%M', time.gmtime())} UTC; load average {load0:.2f} before, "
              f"{os.getloadavg()[0]:.2f} after; {args.rounds} rounds x {args.seconds:g} s per "
              f"mode, a pause of {args.gap_ms:g} ms before each commit; journal in {root}")
        print("ms: p50 / p99 / p99.9; sync = the journal's fdatasync, split into the writer "
              "thread's CPU, its run-queue wait after it woke, and the rest (blocked: the disk)")
        for m in modes:
            wall = [s[0] for s in m.syncs]
            blocked = [max(0.0, w - c - q) for w, c, q, _ in m.syncs]
            rq = [s[2] for s in m.syncs]
            per = max(1, m.events)
            print(f"{m.label:>8}: {m.events} commits; commit {pct(m.latency, .5):.3f} / "
                  f"{pct(m.latency, .99):.3f} / {pct(m.latency, .999):.3f}; sync "
                  f"{pct(wall, .5):.3f} / {pct(wall, .99):.3f} / {pct(wall, .999):.3f}; blocked "
                  f"{pct(blocked, .5):.3f} / {pct(blocked, .99):.3f} / {pct(blocked, .999):.3f} "
                  f"(> 0.5 ms: {sum(1 for b in blocked if b > 5e-4) / max(1, len(blocked)):.2%},"
                  f" {sum(blocked) * 1e3 / max(1, len(blocked)):.3f} ms a sync); "
                  f"run queue {pct(rq, .99):.3f} / {pct(rq, .999):.3f}; syncs > 1 ms "
                  f"{sum(1 for w in wall if w > 1e-3) / max(1, len(wall)):.2%}; disk writes "
                  f"{m.disk[0] / per:.2f} and {m.disk[1] * 512 / per / 1024:.1f} KiB, flushes "
                  f"{m.disk[2] / per:.2f} per commit; index CPU "
                  f"{m.index_cpu * 1e6 / per:.1f} us per commit"
                  + (f"; store {m.db.stat().st_size >> 20} MiB, WAL "
                     f"{Path(str(m.db) + '-wal').stat().st_size >> 20} MiB"
                     if m.db is not None and Path(str(m.db) + "-wal").exists() else ""))
        ckpts = []  # every child's transactions that grew its file: they held a checkpoint
        for m in modes:
            if m.log is not None and m.log.exists():
                for line in m.log.read_text().splitlines():
                    a, b, before, after = map(float, line.split())
                    if after != before:
                        ckpts.append((a, b))
        if ckpts:
            every = [s for m in modes for s in m.syncs]
            inside = [s for s in every if any(a <= s[3] <= b for a, b in ckpts)]
            outside = [s for s in every if not any(a - 1 <= s[3] <= b + 1 for a, b in ckpts)]
            for name, group in (("during a checkpoint", inside), ("1 s or more away", outside)):
                wall = [s[0] for s in group]
                blocked = [max(0.0, w - c - q) for w, c, q, _ in group]
                print(f"  syncs {name} (any mode): {len(group)}; sync {pct(wall, .5):.3f} / "
                      f"{pct(wall, .99):.3f} / max {max(wall, default=0) * 1e3:.3f}; blocked "
                      f"{pct(blocked, .5):.3f} / {pct(blocked, .99):.3f} / max "
                      f"{max(blocked, default=0) * 1e3:.3f}")
            print(f"  {len(ckpts)} index transactions held a checkpoint: "
                  + ", ".join(f"{(b - a) * 1e3:.0f}" for a, b in ckpts) + " ms")
        woke = wakeup_floor(3000, args.gap_ms / 1e3 or 0.0003)
        print(f"floor, a thread woken by an eventfd after a pause: {pct(woke, .5):.3f} / "
              f"{pct(woke, .99):.3f} / {pct(woke, .999):.3f} ms (3,000 wake-ups)")
        print("mean commit latency per mode (ms): " + ", ".join(
            f"{m.label} {statistics.mean(m.latency) * 1e3:.3f}" for m in modes))
    finally:
        for m in modes:
            m.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
