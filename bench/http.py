"""HTTP overhead of GuardMiddleware: the example service with and without the guard.

Three apps run under uvicorn (one worker each, separate processes) on loopback:
plain; ``noop``, the plain app behind a pass-through pure-Python ASGI middleware
with a ``send`` wrapper (the floor any Python middleware costs); and guarded,
with the audit journal. The load comes from
another process: ``wrk`` (Debian package) when installed, otherwise a bounded
httpx loop. Every guarded request is a real read decision, recorded once with
its status and durable in the journal before the response starts; its start-up
heap is frozen by the middleware, as in a service (``--no-gc-freeze``: not).
Rounds rotate the order of the apps so drift on a shared machine hits all alike.

Two measurements per app and round:
  * throughput: ``--connections`` concurrent connections for ``--duration`` seconds,
    and the server's CPU time per request from ``/proc``: all threads, and per
    thread (the event loop, the journal writer, the indexer, any other);
  * latency: one connection, back to back (service time without queueing), p50/p99.
Then, in this process, each step's wall and CPU time per request.
Printed beside them: the UTC time, the load average, and the disk's floor
(append 300 B + fdatasync in the audit folder).

Usage: python bench/http.py [--duration 8] [--connections 32] [--rounds 2]
       [--latency-only] [--trace-slow] [--variant LABEL=OPTIONS ...] (see --help)
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: as a script, its folder must not shadow the stdlib ``http``.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from guard._guard import Checked, Guard, Ruling
from guard._types import Decision, HttpContext, Request

if TYPE_CHECKING:
    from guard.config import Settings

REPO = Path(__file__).resolve().parent.parent
PURPOSE = "relationship.management"
CALLER = "svc:crm"
KINDS = ("plain", "noop", "guarded")
GUARDED = ("guarded",)
LABELS = {"plain": "plain", "noop": "no-op Python middleware",
          "guarded": "guarded, audit journal", "baseline": "guarded, --baseline tree"}
THREADS = ("loop", "writer", "indexer", "other")
LATENCY_BEGIN = signal.SIGRTMIN
"""Sent to a server (``--trace-slow``, ``--index-pause``) before a latency run."""
LATENCY_END = signal.SIGRTMIN + 1
"""... and after it (with ``--trace-slow`` it then writes ``trace-LABEL.json``)."""
GC_REPORT = signal.SIGRTMIN + 2
"""Sent to a server before and after each run: it writes its collector's counts
(``gc-LABEL.json``: collections per generation so far, each full collection's ms)."""
FLOORS = (("noindex", "--no-index"), ("tmpfs", "--no-index --journal-tmpfs"),
          ("nosink", "--audit-sink none"))
"""``--floors``: the guarded app without its index; then also with its journal on tmpfs (no
fdatasync cost); then with no audit at all (the decision and the middleware alone)."""
LABELS.update({"noindex": "guarded, no index (floor)",
               "tmpfs": "guarded, no index, tmpfs journal (floor)",
               "nosink": "guarded, no audit sink (floor only)"})
WRK = ["wrk"]
"""The load generator's command (``--pin-wrk`` puts ``taskset`` before it)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(workdir: Path, kind: str = "guarded") -> Settings:
    from guard.config import AuditSettings, IdentitySettings, Settings

    return Settings(
        audit=AuditSettings(store=f"sqlite:///{workdir / f'audit-{kind}.db'}",
                            hmac_key=workdir / "subject-hmac.key",
                            signing_key=workdir / "audit-signing.key", writer_id="bench"),
        identity=IdentitySettings(dev_key=workdir / "dev-token.key"),
    )


def tmpfs_folder(workdir: Path) -> Path:
    """Where ``--journal-tmpfs`` servers keep their journals (removed at the end)."""
    return Path("/dev/shm") / workdir.name


def server_settings(workdir: Path, label: str, kind: str, opts: argparse.Namespace) -> Settings:
    """The settings a server of ``kind`` serves with, its options applied (``--no-index``,
    ``--journal-tmpfs``); the same after the run, for the count of recorded events."""
    settings = settings_for(workdir, label)
    if kind in ("plain", "noop"):
        return settings
    if opts.journal_tmpfs:
        settings.audit.journal = tmpfs_folder(workdir) / label
    if opts.no_index:
        settings.audit.index = "external"  # and no `guard audit index`: nothing follows it
    return settings


def _resolved(ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
    """``Guard.begin_commit`` of ``--audit-sink none``: nothing recorded, resolved at once.

    A floor for the bench only, never a mode of the guard: it shows what the
    decision and the middleware cost without the audit's hand-over, writer and index.
    """
    ruling.queued = True
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("unrecorded")
    return done


class Noop:
    """A pass-through pure-Python ASGI middleware with a ``send`` wrapper: the floor."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, object], receive: Callable[..., Awaitable[object]],
                       send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: dict[str, object]) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def cpu_list(text: str) -> set[int]:
    """The CPUs of a ``taskset -c`` list (``0``, ``1,3``, ``0-2``)."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def external_indexer(settings: Settings, cpus: str | None = None) -> subprocess.Popen[bytes]:
    """``guard audit index`` for the settings' journal, as a child of this server process
    (so its CPU is counted with the server's); under ``taskset -c CPUS`` if ``cpus``."""
    from guard.audit._jtrail import journal_folder

    return subprocess.Popen(
        [*(["taskset", "-c", cpus] if cpus else []),
         sys.executable, "-c", "from guard.cli import main; main()", "audit", "index",
         "--store", settings.audit.store, "--journal", str(journal_folder(settings.audit)),
         "--every", "1"],
        env={**os.environ, "GUARD_CONFIG": os.devnull}, stdout=subprocess.DEVNULL)


def server_options() -> argparse.ArgumentParser:
    """The options of one server (the bench's own, and each ``--variant``'s)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--gc-threshold", type=int, default=None,
                        help="the servers' gc.set_threshold first value (default: Python's 700)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="the servers call gc.freeze() after the warm-up")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="the guarded app's middleware leaves the collector alone "
                             "(sidecar.gc_freeze = false; by default it freezes the start-up "
                             "heap when its start-up is complete)")
    parser.add_argument("--plain", action="store_true",
                        help="a --variant of the plain app, not of the guarded one (e.g. "
                             "'pfreeze=--plain --gc-freeze': the ratio against a frozen plain)")
    parser.add_argument("--external-index", action="store_true",
                        help="the guarded server's audit journal is indexed by a child "
                             "`guard audit index` process (its CPU counted as the indexer's)")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="SECONDS",
                        help="the servers' sys.setswitchinterval (default: Python's 0.005)")
    parser.add_argument("--index-nice", type=int, default=None, metavar="N",
                        help="the guarded server's indexer (thread, or `guard audit index`) "
                             "at this nice value")
    parser.add_argument("--index-idle", action="store_true",
                        help="the guarded server's indexer (thread, or `guard audit index`) "
                             "under SCHED_IDLE")
    parser.add_argument("--index-cpus", default=None, metavar="CPUS",
                        help="the guarded server's indexer on these CPUs (e.g. 1): `guard audit "
                             "index` started under `taskset -c CPUS` with --external-index, "
                             "else the service's child (audit.index_cpus)")
    parser.add_argument("--service-cpus", default=None, metavar="CPUS",
                        help="the guarded server's process, every thread, on these CPUs (e.g. "
                             "0; sched_setaffinity at its start, as `taskset -c CPUS` would)")
    parser.add_argument("--index-pause", action="store_true",
                        help="the guarded server's indexer (thread, or `guard audit index`) "
                             "does nothing during each latency run (the index catches up after)")
    parser.add_argument("--no-index", action="store_true",
                        help="floor: nothing indexes the guarded server's journal during the "
                             "run (audit.index = \"external\" and no `guard audit index`; "
                             "indexed after the run, for the count)")
    parser.add_argument("--journal-tmpfs", action="store_true",
                        help="floor: the guarded server's journal on tmpfs (/dev/shm), where "
                             "fdatasync costs next to nothing (never for a service: not durable)")
    parser.add_argument("--audit-sink", choices=("journal", "none"), default="journal",
                        help="floor, bench only, not a supported mode: 'none' decides and holds "
                             "as usual but hands no decision to the journal (each commit is "
                             "resolved at once): the decision and the middleware alone")
    parser.add_argument("--trace-slow", action="store_true",
                        help="trace each latency run's requests, collections, lock waits, "
                             "syncs and index transactions; print the slowest 1 %% "
                             "(bench/http_trace.py; needs gcc)")
    return parser


def _to_args(opts: argparse.Namespace) -> list[str]:
    """The command-line form of :func:`server_options`' values."""
    out: list[str] = []
    for action in server_options()._actions:
        value = getattr(opts, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        out += [action.option_strings[0]] + ([] if value is True else [str(value)])
    return out


def _deprioritise(opts: argparse.Namespace, tid: int) -> None:
    """The indexer's thread or process at ``--index-nice`` / ``--index-idle``."""
    if opts.index_idle:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    if opts.index_nice is not None:
        os.setpriority(os.PRIO_PROCESS, tid, opts.index_nice)


def _pause_index(process: subprocess.Popen[bytes] | None, pause: bool) -> None:
    """Stop (or resume) ``guard audit index``, or this process's indexer threads, for a while."""
    if process is not None:
        os.kill(process.pid, signal.SIGSTOP if pause else signal.SIGCONT)
        return
    import threading

    from guard.audit._indexer import Indexer

    # by their threads (gc.get_objects() does not see what gc.freeze() froze)
    targets = [getattr(getattr(t, "_target", None), "__self__", None)
               for t in threading.enumerate()]
    for indexer in [o for o in targets if isinstance(o, Indexer)]:
        with indexer._cond:  # its thread asks _ready() how long to sleep before a transaction
            if pause:
                indexer._ready = lambda: 3600.0  # type: ignore[method-assign]
            else:
                del indexer._ready
                indexer._cond.notify_all()


def serve(kind: str, port: int, workdir: Path, opts: argparse.Namespace,
          tree: Path = REPO, label: str | None = None) -> None:
    """Child process: serve the example app (from ``tree``) until terminated.

    ``opts``: :func:`server_options` (``external_index``: the guarded app's journal is
    indexed by a child ``guard audit index``). ``label`` names its files (a variant's).

    On SIGUSR1 it writes its threads (native id -> name) to ``threads-LABEL.json``;
    on SIGUSR2 it calls ``gc.freeze()`` (sent after the warm-up with ``--gc-freeze``).
    """
    import gc
    import threading

    import uvicorn

    if opts.service_cpus and kind not in ("plain", "noop"):
        os.sched_setaffinity(0, cpu_list(opts.service_cpus))  # first: every thread inherits it
    sys.path.insert(0, str(tree))
    from examples.customers import create_app

    label = label or kind

    def threads(*_: object) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        part = workdir / f"threads-{label}.part"
        part.write_text(json.dumps(names))
        part.rename(workdir / f"threads-{label}.json")  # whole, or not there
        if opts.index_nice is not None or opts.index_idle:
            for t in threading.enumerate():
                if "index" in t.name and t.native_id is not None:
                    _deprioritise(opts, t.native_id)

    signal.signal(signal.SIGUSR1, threads)
    signal.signal(signal.SIGUSR2, lambda *_: gc.freeze())
    full: list[float] = []
    full_cpu: list[float] = []
    began = [0.0, 0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:  # wall and CPU time of the collecting thread
            if phase == "start":
                began[:] = time.perf_counter(), time.thread_time()
            else:
                full.append((time.perf_counter() - began[0]) * 1e3)
                full_cpu.append((time.thread_time() - began[1]) * 1e3)

    def collected(*_: object) -> None:
        part = workdir / f"gc-{label}.part"
        part.write_text(json.dumps({"collections": [g["collections"] for g in gc.get_stats()],
                                    "full_ms": full, "full_cpu_ms": full_cpu}))
        part.rename(workdir / f"gc-{label}.json")

    gc.callbacks.append(timed)
    signal.signal(GC_REPORT, collected)
    if opts.gc_threshold:
        gc.set_threshold(opts.gc_threshold, *gc.get_threshold()[1:])
    if opts.switch_interval:
        sys.setswitchinterval(opts.switch_interval)
    wrap, begin, end = None, [], []
    if opts.trace_slow:
        from bench.http_trace import install

        wrap, trace_on, trace_off = install(
            kind if kind in ("plain", "noop") else "guarded", workdir, label)
        begin.append(trace_on)
        end.insert(0, trace_off)
    settings, indexer = server_settings(workdir, label, kind, opts), None
    settings.sidecar.gc_freeze = not opts.no_gc_freeze  # GuardMiddleware's freeze at start-up
    if opts.index_cpus and not opts.external_index:
        settings.audit.index_cpus = sorted(cpu_list(opts.index_cpus))
    if opts.external_index and kind != "plain" and kind != "noop" and not opts.no_index:
        settings.audit.index = "external"
        indexer = external_indexer(settings, opts.index_cpus)
        if opts.index_nice is not None or opts.index_idle:
            _deprioritise(opts, indexer.pid)
    if opts.index_pause and kind != "plain" and kind != "noop":
        begin.append(lambda: _pause_index(indexer, True))
        end.append(lambda: _pause_index(indexer, False))
    signal.signal(LATENCY_BEGIN, lambda *_: [step() for step in begin])
    signal.signal(LATENCY_END, lambda *_: [step() for step in end])
    guard: Guard | None = None
    if opts.audit_sink == "none" and kind in ("guarded", "baseline"):
        guard = Guard.from_settings(settings)  # the real guard, its commits not recorded
        guard.begin_commit = _resolved  # type: ignore[method-assign]
    app = create_app(settings, guard=guard, enforce=kind in ("guarded", "baseline"))
    if kind == "noop":
        app.add_middleware(Noop)
    served: Callable[..., Awaitable[None]] = app if wrap is None else wrap(app)
    uvicorn.run(served, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="on")
    if indexer is not None:  # the bench also stops it: uvicorn may end by the signal itself
        indexer.terminate()


@dataclass
class Run:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0  # server CPU (all threads, user + system) per request
    child_cpu_us: float = 0.0  # ... and its child processes', if any
    threads_us: dict[str, float] | None = None  # ... per thread (loop, writer, indexer, other)
    threads_sys_us: dict[str, float] | None = None  # ... of which in the kernel (system time)
    load_cpu_us: float = 0.0  # the load generator's CPU (wrk, user + system) per request
    collections: tuple[int, int, int] = (0, 0, 0)  # the server's, by generation, in the run
    full_ms: tuple[float, ...] = ()  # each full (gen 2) collection's duration in the run
    full_cpu_ms: float = 0.0  # ... and the CPU time they took, in all

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each thread of a process (``/proc/PID/task``)."""
    out: dict[int, tuple[float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def thread_roles(pid: int, workdir: Path, kind: str) -> dict[int, str]:
    """Each server thread's role: the event loop (the main thread), writer, indexer, other."""
    path = workdir / f"threads-{kind}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    names = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}
    roles = {}
    for tid in thread_cpu(pid):
        name = names.get(tid, "")
        roles[tid] = ("loop" if tid == pid else "writer" if "writer" in name
                      else "indexer" if "index" in name else "other")
    return roles


def peak_rss(pid: int) -> tuple[float, float]:
    """A server's resident memory now and at its peak (MiB; ``/proc/PID/status``)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return (0.0, 0.0)
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return (int(found.get("VmRSS", 0)) / 1024, int(found.get("VmHWM", 0)) / 1024)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (counted with the server's CPU)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s)", text)
    assert found, text
    return float(found.group(1)) * _UNIT[found.group(2)]


def wrk_run(url: str, token: str, connections: int, seconds: float, script_dir: Path) -> Run:
    script = script_dir / "guard.lua"
    script.write_text(
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f'wrk.headers["X-Purpose"] = "{PURPOSE}"\n'
        "local n = 0\n"
        "request = function()\n"
        "  n = n % 100 + 1\n"
        '  return wrk.format("GET", string.format("/customers/c-%04d", n))\n'
        "end\n"
    )
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [*WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", out)
    assert total, out
    secs = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    assert p50, out
    assert p99, out
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk's alone: the one child reaped
    requests = int(total.group(1))
    wrk_cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    return Run(requests, secs, errors, _ms(p50.group(1)), _ms(p99.group(1)),
               load_cpu_us=wrk_cpu / max(1, requests) * 1e6)


async def _httpx_run(url: str, token: str, connections: int, seconds: float) -> Run:
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal errors
        n = offset
        while time.perf_counter() < stop:
            n = n % 100 + 1
            began = time.perf_counter()
            response = await client.get(f"/customers/c-{n:04d}", headers=headers)
            latencies.append((time.perf_counter() - began) * 1000)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client, i) for i in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return Run(len(latencies), elapsed, errors, latencies[len(latencies) // 2],
               latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))])


def collector_counts(pid: int, workdir: Path, label: str
                     ) -> tuple[list[int], list[float], list[float]]:
    """A server's collections so far, by generation, each full collection's ms and CPU ms."""
    path = workdir / f"gc-{label}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, GC_REPORT)
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not path.exists():
        return [0, 0, 0], [], []
    data = json.loads(path.read_text())
    return list(data["collections"]), list(data["full_ms"]), list(data["full_cpu_ms"])


def load(url: str, token: str, connections: int, seconds: float, workdir: Path,
         use_wrk: bool, pid: int | None = None, roles: dict[int, str] | None = None,
         label: str | None = None) -> Run:
    gc_before = collector_counts(pid, workdir, label) if pid and label else None
    kids = children(pid) if pid else []
    before = cpu_seconds(pid) if pid else 0.0
    threads_before = thread_cpu(pid) if pid else {}
    kids_before = sum(cpu_seconds(k) for k in kids)
    if use_wrk:
        run = wrk_run(url, token, connections, seconds, workdir)
    else:
        run = asyncio.run(_httpx_run(url, token, connections, seconds))
    if pid:
        run.cpu_us = (cpu_seconds(pid) - before) / max(1, run.requests) * 1e6
        run.child_cpu_us = (sum(cpu_seconds(k) for k in kids) - kids_before
                            ) / max(1, run.requests) * 1e6
        per, kernel = dict.fromkeys(THREADS, 0.0), dict.fromkeys(THREADS, 0.0)
        for tid, (user, system) in thread_cpu(pid).items():
            role = (roles or {}).get(tid, "other")
            user_before, system_before = threads_before.get(tid, (0.0, 0.0))
            per[role] += (user + system - user_before - system_before) / max(1, run.requests) * 1e6
            kernel[role] += (system - system_before) / max(1, run.requests) * 1e6
        per["indexer"] += run.child_cpu_us  # the only child: `guard audit index`, if any
        run.threads_us, run.threads_sys_us = per, kernel
    if gc_before is not None and pid and label:
        counts, full, full_cpu = collector_counts(pid, workdir, label)
        done = [after - before for after, before in zip(counts, gc_before[0], strict=True)]
        run.collections = (done[0], done[1], done[2])
        run.full_ms = tuple(full[len(gc_before[1]):])
        run.full_cpu_ms = sum(full_cpu[len(gc_before[2]):])
    return run


def start(kind: str, workdir: Path, opts: argparse.Namespace, tree: Path = REPO,
          label: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--dir", str(workdir),
         "--tree", str(tree), "--label", label or kind, *_to_args(opts)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(REPO)]))},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the {label or kind} server did not start") from None
            time.sleep(0.1)


def bracketed(pid: int, workdir: Path, label: str, round_no: int, opts: argparse.Namespace,
              run: Callable[[], Run]) -> Run:
    """``run`` between the server's LATENCY_BEGIN and LATENCY_END (``--trace-slow``,
    ``--index-pause``); keeps ``trace-LABEL-N.json``."""
    if not (opts.trace_slow or opts.index_pause):
        return run()
    path = workdir / f"trace-{label}.json"
    path.unlink(missing_ok=True)
    os.kill(pid, LATENCY_BEGIN)
    time.sleep(0.2)  # the server handled it (and a paused indexer finished its transaction)
    result = run()
    os.kill(pid, LATENCY_END)
    deadline = time.monotonic() + 10
    while opts.trace_slow and not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if path.exists():
        path.rename(workdir / f"trace-{label}-{round_no}.json")
    return result


def breakdown(workdir: Path, token: str, n: int = 2000) -> list[tuple[str, float, float, float]]:
    """Per request: wall and this process's CPU microseconds of each step (no HTTP)."""
    from middleware.identity import Authenticator
    from middleware.routes import RouteTable

    auth = Authenticator.from_settings(settings_for(workdir).identity)
    routes = RouteTable.from_csv(REPO / "policies" / "routes.csv")
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
    request = Request(CALLER, PURPOSE, ("identity", "contact"), subject="c-0001")
    http = HttpContext("GET", "/customers/{customer_id}")
    out: list[tuple[str, float, float, float]] = []

    def timed(label: str, fn: Callable[[], object], count: int = n) -> None:
        began, loop, cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for _ in range(count):
            fn()
        out.append((label, (time.perf_counter() - began) / count * 1e6,
                    (time.thread_time() - loop) / count * 1e6,
                    (time.process_time() - cpu) / count * 1e6))

    async def concurrent(fn: Callable[[], Awaitable[object]], label: str) -> None:
        began, loop, cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for _ in range(n // 32):
            await asyncio.gather(*(fn() for _ in range(32)))
        count = n // 32 * 32
        out.append((label, (time.perf_counter() - began) / count * 1e6,
                    (time.thread_time() - loop) / count * 1e6,
                    (time.process_time() - cpu) / count * 1e6))

    timed("identity (verified token, cached)", lambda: auth.authenticate(headers, "127.0.0.1"))
    timed("route match", lambda: routes.match("GET", "/customers/c-0042"))
    # Its own audit store, the same development key as the token.
    folder = workdir / "breakdown"
    folder.mkdir()
    settings = settings_for(folder).model_copy(
        update={"identity": settings_for(workdir).identity})
    with Guard.from_settings(settings) as guard:
        timed("engine decision", lambda: guard.holder.decide(request))
        timed("Guard.decide (decision + event fields, nothing recorded)",
              lambda: guard.decide(request, http))

        async def steps(guard: Guard = guard) -> None:
            await concurrent(lambda: guard.acommit(guard.decide(request, http), 200),
                             "decide + acommit, durable in the journal (32 concurrent)")
            guard.trail.flush()

        asyncio.run(steps())
        out += asgi_stack(settings, guard, token)
    return out


class _DecideOnly:
    """Diagnostic only: the guard's decision without the audit write (never ship this)."""

    def __init__(self, guard: Guard) -> None:
        self.holder = guard.holder

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked:
        return Checked(self.holder.decide(request), "bench")

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False, current: Any = None) -> Ruling:
        return Ruling(self.holder.decide(request), request, None, {})

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked:
        return Checked(ruling.decision, "bench")

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("bench")
        return done

    def post(self, *_: object) -> bool:
        return True

    def enqueue_outcome(self, *_: object) -> bool:
        return True

    async def arecord_denial(self, request: Request, decision: Decision,
                             http: HttpContext | None = None, *,
                             detail: str | None = None, source: str | None = None
                             ) -> Checked:
        return Checked(decision, "bench")


def asgi_stack(settings: Settings, guard: Guard, token: str, n: int = 1000
               ) -> list[tuple[str, float, float, float]]:
    """Per request through the whole ASGI stack, in process, one at a time: wall and CPU."""
    from examples.customers import create_app

    headers = [(b"host", b"svc"), (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", PURPOSE.encode()), (b"user-agent", b"bench")]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"breakdown request answered {message['status']}")

    async def run(app: Callable[..., Awaitable[None]], count: int) -> tuple[float, float, float]:
        async def one(i: int) -> None:
            path = f"/customers/c-{i % 100 + 1:04d}"
            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "GET", "scheme": "http", "path": path,
                       "raw_path": path.encode(), "root_path": "", "query_string": b"",
                       "headers": headers, "client": ("127.0.0.1", 1),
                       "server": ("svc", 80)}, receive, send)

        began, loop, cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for start in range(0, count, 32):
            await asyncio.gather(*(one(i) for i in range(start, start + 32)))
        return ((time.perf_counter() - began) / count * 1e6,
                (time.thread_time() - loop) / count * 1e6,
                (time.process_time() - cpu) / count * 1e6)

    noop = create_app(settings, enforce=False)
    noop.add_middleware(Noop)
    variants = [("ASGI request, plain app", create_app(settings, enforce=False)),
                ("ASGI request, no-op Python middleware", noop),
                ("ASGI request, guard without the audit write",
                 create_app(settings, guard=_DecideOnly(guard))),
                ("ASGI request, guard, durable in the journal", create_app(settings, guard=guard))]
    out = []
    for label, app in variants:
        asyncio.run(run(app, 320))
        out.append((f"{label} (32 concurrent)", *asyncio.run(run(app, n))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     parents=[server_options()])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--latency-duration", type=float, default=4.0,
                        help="seconds per single-connection latency run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load loop")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the in-process cost breakdown")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the single-connection latency runs (no throughput runs)")
    parser.add_argument("--pin-wrk", default=None, metavar="CPUS",
                        help="run wrk under `taskset -c CPUS`")
    parser.add_argument("--baseline", type=Path, default=None, metavar="TREE",
                        help="also serve the guarded app from another checkout (A/B in one run)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=OPTIONS",
                        help="also serve the guarded app with these server options added "
                             "(e.g. 'si=--switch-interval 0.0005'; A/B in one run; repeatable)")
    parser.add_argument("--floors", action="store_true",
                        help="also serve the guarded app with the audit's cost taken away piece "
                             "by piece, in the same run: " + "; ".join(
                                 f"{label}: {options}" for label, options in FLOORS))
    parser.add_argument("--breakdown-only", action="store_true",
                        help="only the in-process cost breakdown (no servers)")
    parser.add_argument("--serve", choices=(*KINDS, "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=REPO, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--label", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.dir, args, args.tree, args.label)
        return

    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    if args.pin_wrk:
        WRK[:0] = ["taskset", "-c", args.pin_wrk]
    workdir = Path(tempfile.mkdtemp(prefix="guard-bench-http-"))
    sys.path.insert(0, str(REPO))
    from bench._pg import fdatasync_floor
    from guard.cli._token import issue_token

    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    token = issue_token(settings_for(workdir).identity, CALLER, None, 3600)
    if args.breakdown_only:
        _print_steps(breakdown(workdir, token))
        print(f"{began}; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
        shutil.rmtree(workdir, ignore_errors=True)
        return
    base = server_options().parse_args(_to_args(args))
    # label -> (kind, tree, options)
    plan: dict[str, tuple[str, Path, argparse.Namespace]] = {
        kind: (kind, REPO, base) for kind in KINDS}
    if args.baseline is not None:
        plan["baseline"] = ("baseline", args.baseline.resolve(), base)
    floors = [f"{label}={options}" for label, options in FLOORS] if args.floors else []
    for variant in [*floors, *args.variant]:
        label, _, extra = variant.partition("=")
        if not label or label in plan or not re.fullmatch(r"[\w.-]+", label):
            parser.error(f"--variant {variant!r}: give LABEL=OPTIONS with a new word as LABEL")
        opts = server_options().parse_args([*_to_args(base), *shlex.split(extra)])
        plan[label] = ("plain" if opts.plain else "guarded", REPO, opts)
        LABELS.setdefault(label, f"{'plain' if opts.plain else 'guarded'}, "
                                 + extra.replace("--plain", "").strip())
    kinds = tuple(plan)
    guarded = tuple(label for label, (kind, _, _) in plan.items() if kind not in KINDS[:2])
    servers = {label: start(kind, workdir, opts, tree, label)
               for label, (kind, tree, opts) in plan.items()}
    results: dict[str, dict[str, list[Run]]] = {k: {"tput": [], "lat": []} for k in servers}
    try:
        for _, url in servers.values():  # warm up all (the guard opens at its first request)
            load(url, token, 4, 1.0, workdir, use_wrk)
        for label, (proc, _) in servers.items():
            if plan[label][2].gc_freeze:
                os.kill(proc.pid, signal.SIGUSR2)
        roles = {kind: thread_roles(proc.pid, workdir, kind) for kind, (proc, _) in
                 servers.items()}
        for round_no in range(args.rounds):
            turn = round_no % len(kinds)
            order = list(kinds[turn:] + kinds[:turn])
            for kind in order:
                proc, url = servers[kind]
                if not args.latency_only:
                    results[kind]["tput"].append(
                        load(url, token, args.connections, args.duration, workdir, use_wrk,
                             pid=proc.pid, roles=roles[kind], label=kind))

                def latency(url: str = url, pid: int = proc.pid, label: str = kind) -> Run:
                    return load(url, token, 1, args.latency_duration, workdir, use_wrk,
                                pid=pid, label=label)

                results[kind]["lat"].append(
                    bracketed(proc.pid, workdir, kind, round_no, plan[kind][2], latency))
    finally:
        memory = {label: peak_rss(proc.pid) for label, (proc, _) in servers.items()}
        for proc, _ in servers.values():
            kids = children(proc.pid)  # `guard audit index` with --external-index
            proc.terminate()
            proc.wait(timeout=30)
            for kid in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(kid, signal.SIGTERM)
    load_after = os.getloadavg()

    from guard.audit._jtrail import JournalTrail

    recorded = {}
    for kind in guarded:
        audit = server_settings(workdir, kind, plan[kind][0], plan[kind][2]).audit
        audit.index = "auto"  # a --no-index journal is indexed now
        JournalTrail(audit).close()  # the index caught up
        with sqlite3.connect(workdir / f"audit-{kind}.db") as conn:
            recorded[kind] = (
                conn.execute("SELECT count(*) FROM audit_event "
                             "WHERE kind = 'decision' AND allowed = 1").fetchone()[0],
                conn.execute("SELECT count(*) FROM audit_event WHERE kind = 'outcome'"
                             ).fetchone()[0])
    steps = [] if args.no_breakdown else breakdown(workdir, token)
    floor = fdatasync_floor(workdir)
    if any(opts.trace_slow for _, _, opts in plan.values()):
        from bench.http_trace import report

        for label in kinds:
            for round_no in range(args.rounds):
                path = workdir / f"trace-{label}-{round_no}.json"
                if path.exists():
                    report(path, f"{label}, round {round_no + 1}")
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(tmpfs_folder(workdir), ignore_errors=True)

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else 0.0

    def summary(kind: str) -> dict[str, float]:
        tput, lat = results[kind]["tput"], results[kind]["lat"]
        row = {"rps": med([r.rps for r in tput]), "p50": med([r.p50_ms for r in tput]),
               "p99": med([r.p99_ms for r in tput]), "p50_1": med([r.p50_ms for r in lat]),
               "p99_1": med([r.p99_ms for r in lat]),
               "errors": float(sum(r.errors for r in tput + lat)),
               "cpu": med([r.cpu_us + r.child_cpu_us for r in tput])}
        for role in THREADS:
            row[role] = med([(r.threads_us or {}).get(role, 0.0) for r in tput])
            row[f"{role}_sys"] = med([(r.threads_sys_us or {}).get(role, 0.0) for r in tput])
        row["wrk"] = med([r.load_cpu_us for r in tput])
        return row

    rows = {kind: summary(kind) for kind in kinds}
    plain = rows["plain"]
    print(f"{began}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} cores)")
    print(f"servers: uvicorn, 1 worker each; gc threshold "
          f"{args.gc_threshold or 'Python default (700)'}"
          f"{'; gc.freeze() after the warm-up' if args.gc_freeze else ''}"
          f"; guarded: start-up heap frozen by the middleware"
          f"{' (off: --no-gc-freeze)' if args.no_gc_freeze else ''}"
          f"{'; guarded: index in a child `guard audit index`' if args.external_index else ''}"
          f"{f'; switch interval {args.switch_interval:g} s' if args.switch_interval else ''}")
    if args.baseline is not None:
        print(f"baseline tree: {plan['baseline'][1]}")
    print(f"load generator: {' '.join(WRK) if use_wrk else 'httpx'}; {args.rounds} rounds; "
          + ("" if args.latency_only else
             f"{args.connections} connections x {args.duration:g}s for throughput, ")
          + f"1 connection x {args.latency_duration:g}s for latency (medians of rounds)")
    width = max(26, *(len(LABELS[kind]) for kind in kinds))
    print(f"{'app':<{width}} {'req/s':>7} {'of plain':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p50 c=1':>8} {'p99 c=1':>8} {'errors':>6} {'CPU us/req':>10}  "
          + " ".join(f"{role:>7}" for role in THREADS))
    for kind in kinds:
        row = rows[kind]
        print(f"{LABELS[kind]:<{width}} {row['rps']:>7.0f} "
              f"{row['rps'] / (plain['rps'] or 1):>8.1%} "
              f"{row['p50']:>7.2f} {row['p99']:>7.2f} {row['p50_1']:>8.2f} {row['p99_1']:>8.2f} "
              f"{row['errors']:>6.0f} {row['cpu']:>10.0f}  "
              + " ".join(f"{row[role]:>7.0f}" for role in THREADS))
    print("  (CPU per request from /proc: all threads and child processes; then per thread:"
          " the event loop, the audit journal writer, the indexer, any other)")
    print("p99 at one connection per round (ms): " + "; ".join(
        f"{kind} " + " ".join(f"{r.p99_ms:.2f}" for r in results[kind]["lat"]) for kind in kinds))
    _print_rounds(results, kinds, width, args.latency_only)
    print(f"disk floor (audit folder): append 300 B + fdatasync p50 {floor[0]:.3f} ms, "
          f"p99 {floor[1]:.3f} ms")
    print("cyclic collector in the servers (sums over the rounds): collections per 10,000 "
          "requests gen0/gen1/gen2 and each full collection's ms, at throughput and in the "
          "latency runs (c=1); the full collections' CPU per request at throughput")
    for kind in kinds:
        tput, lat = results[kind]["tput"], results[kind]["lat"]
        cpu = sum(r.full_cpu_ms for r in tput) / (sum(r.requests for r in tput) or 1) * 1e3
        print(f"  {LABELS[kind]:<{width}} {_per_10k(tput):>16}; full ms "
              f"{_fulls(tput):<24} c=1: {_per_10k(lat):>16}; full ms {_fulls(lat)}; "
              f"full collections' CPU {cpu:.1f} us/request")
    if not args.latency_only:
        cores = os.cpu_count() or 1
        print(f"where the {cores} cores went at {args.connections} connections (us per request, "
              "medians; sys: of it in the kernel): the event loop and how busy it was, the "
              "writer, the indexer, the load generator, and all of it as a share of the cores")
        print(f"  {'app':<{width}} {'req/s':>7} {'loop':>5} {'busy':>5} {'sys':>4} "
              f"{'writer':>6} {'sys':>4} {'index':>5} {'other':>5} {'load':>5} {'cores':>6}")
        for kind in kinds:
            row = rows[kind]
            print(f"  {LABELS[kind]:<{width}} {row['rps']:>7.0f} {row['loop']:>5.0f} "
                  f"{row['rps'] * row['loop'] / 1e6:>5.0%} {row['loop_sys']:>4.0f} "
                  f"{row['writer']:>6.0f} {row['writer_sys']:>4.0f} {row['indexer']:>5.0f} "
                  f"{row['other']:>5.0f} {row['wrk']:>5.0f} "
                  f"{row['rps'] * (row['cpu'] + row['wrk']) / (cores * 1e6):>6.0%}")
    if args.floors:
        ratio = {kind: rows[kind]["rps"] / (plain["rps"] or 1) for kind in kinds}
        steps_up = [("guarded", "noindex", "the index"),
                    ("noindex", "tmpfs", "the journal's fdatasync"),
                    ("tmpfs", "nosink", "the rest of the audit (hand-over, writer, wake-up)"),
                    ("nosink", "plain", "the decision and the middleware")]
        print("floors, of plain in this run: " + "; ".join(
            f"{LABELS[kind]} {ratio[kind]:.1%}" for kind in
            ("guarded", "noindex", "tmpfs", "nosink", "noop")))
        print("  what each piece takes (points of plain): " + "; ".join(
            f"{what} {(ratio[upper] - ratio[lower]) * 100:+.1f}"
            for lower, upper, what in steps_up))
    print("servers' resident memory at the end, MiB (peak): " + "; ".join(
        f"{kind} {memory[kind][0]:.0f} ({memory[kind][1]:.0f})" for kind in kinds))
    noop = rows["noop"]
    print("no-op middleware floor: " + ("" if args.latency_only else
          f"{noop['rps'] / (plain['rps'] or 1):.1%} of plain; "
          f"{noop['cpu'] - plain['cpu']:.0f} us CPU/request; ") +
          f"p50 added (c=1) {noop['p50_1'] - plain['p50_1']:.2f} ms")
    for kind in guarded:
        row = rows[kind]
        frozen = [label for label, (k, _, opts) in plan.items() if k == "plain" and opts.gc_freeze]
        of_frozen = "".join(f" ({row['rps'] / (rows[label]['rps'] or 1):.1%} of {LABELS[label]}; "
                            f"CPU {row['cpu'] - rows[label]['cpu']:.0f} us over it)"
                            for label in frozen)
        print(f"{LABELS[kind]}: " + ("" if args.latency_only else  # no throughput measured
              f"throughput {row['rps'] / (plain['rps'] or 1):.1%} of plain{of_frozen} "
              f"(target >= 85%); guard CPU {row['cpu'] - plain['cpu']:.0f} us/request "
              f"(guarded minus plain; target <= 30): loop {row['loop'] - plain['loop']:.0f}, "
              f"writer {row['writer']:.0f}, indexer {row['indexer']:.0f}, "
              f"other {row['other'] - plain['other']:.0f}; ") +
              f"p50 added (c=1) {row['p50_1'] - plain['p50_1']:.2f} ms "
              f"(target <= {floor[0] + 0.15:.2f}); "
              f"p99 added (c=1) {row['p99_1'] - plain['p99_1']:.2f} ms "
              f"(target <= {floor[1] + 0.5:.2f})")
        requests = sum(r.requests for r in results[kind]["tput"] + results[kind]["lat"])
        if plan[kind][2].audit_sink == "none":
            print("  audit: none recorded (--audit-sink none: a floor, not a mode of the guard)")
            continue
        print(f"  audit: {recorded[kind][0]} durable allowed decisions and {recorded[kind][1]} "
              f"outcome events for {requests} requests (warm-up included in the store)")
    if steps:
        _print_steps(steps)
    if any(row["errors"] for row in rows.values()):
        print("WARNING: some requests failed; the figures are not valid")


def _print_rounds(results: dict[str, dict[str, list[Run]]], kinds: tuple[str, ...], width: int,
                  latency_only: bool) -> None:
    """Each round apart: what the medians hide (a full collection lands in some rounds only)."""
    print("per round: req/s (of plain in the same round) and full collections (ms) at "
          "throughput; p50 / p99 ms and full collections at one connection")
    rounds = len(results["plain"]["lat"])
    for round_no in range(rounds):
        plain = results["plain"]["tput"][round_no].rps if not latency_only else 0.0
        for kind in kinds:
            lat = results[kind]["lat"][round_no]
            line = f"  {round_no + 1} {LABELS[kind]:<{width}} "
            if not latency_only:
                tput = results[kind]["tput"][round_no]
                line += (f"{tput.rps:>7.0f} ({tput.rps / (plain or 1):>6.1%}) full "
                         f"{_fulls([tput]):<22} ")
            line += f"c=1 {lat.p50_ms:.2f} / {lat.p99_ms:>6.2f} full {_fulls([lat])}"
            print(line)


def _per_10k(runs: list[Run]) -> str:
    """Collections per 10,000 requests of ``runs``, by generation (``gen0/gen1/gen2``)."""
    requests = sum(r.requests for r in runs) or 1
    return "/".join(f"{sum(r.collections[g] for r in runs) / requests * 1e4:.1f}"
                    for g in range(3))


def _fulls(runs: list[Run]) -> str:
    """The full collections' durations in ``runs`` (ms), or ``none``."""
    return ", ".join(f"{ms:.1f}" for r in runs for ms in r.full_ms) or "none"


def _print_steps(steps: list[tuple[str, float, float, float]]) -> None:
    print("in-process cost per request, microseconds (this process, not the server: "
          "wall, CPU of the calling thread (the event loop), CPU of all threads)")
    print(f"  {'step':<66} {'wall':>8} {'loop':>8} {'all':>8}")
    for label, wall, loop, cpu in steps:
        print(f"  {label:<66} {wall:>8.1f} {loop:>8.1f} {cpu:>8.1f}")


if __name__ == "__main__":
    main()
