"""HTTP overhead of GuardMiddleware: the example service with and without the guard.

Three apps run under uvicorn (one worker each, separate processes) on loopback:
plain, guarded with the group-commit audit writer thread (``audit.writer =
"thread"``) and guarded with the audit journal (``audit.writer = "journal"``). The load
comes from another process: ``wrk`` (Debian package) when installed, otherwise
a bounded httpx loop. Every guarded request is a real decision with a durable
SQLite audit event before the handler, and an outcome event queued for the
next group commit after it. Rounds rotate the order of the apps so drift on a
shared machine hits all alike.

Two measurements per app and round:
  * throughput: ``--connections`` concurrent connections for ``--duration`` seconds,
    and the server's CPU time (all threads, from ``/proc``) per request, and its
    child processes';
  * latency: one connection, back to back (service time without queueing), p50/p99.
Then, in this process, each step's wall and CPU time per request.

Usage: python bench/http.py [--duration 8] [--connections 32] [--rounds 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named http.py: as a script, its folder must not shadow the stdlib ``http``.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from guard._guard import Checked, Guard, Ruling
from guard._types import Decision, HttpContext, Request

if TYPE_CHECKING:
    from guard.config import Settings

REPO = Path(__file__).resolve().parent.parent
PURPOSE = "relationship.management"
CALLER = "svc:crm"
KINDS = ("plain", "guarded", "journal")
GUARDED = KINDS[1:]
LABELS = {"plain": "plain", "guarded": "guarded, audit writer thread",
          "journal": "guarded, audit journal"}
WRITERS = {"journal": "journal"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(workdir: Path, kind: str = "guarded") -> Settings:
    from guard.config import AuditSettings, IdentitySettings, Settings

    writer = WRITERS.get(kind, "thread")
    return Settings(
        audit=AuditSettings(store=f"sqlite:///{workdir / f'audit-{kind}.db'}",
                            hmac_key=workdir / "subject-hmac.key",
                            signing_key=workdir / "audit-signing.key", writer_id="bench",
                            writer=writer),
        identity=IdentitySettings(dev_key=workdir / "dev-token.key"),
    )


def serve(kind: str, port: int, workdir: Path) -> None:
    """Child process: serve the example app (guarded or plain) until terminated."""
    import uvicorn

    sys.path.insert(0, str(REPO))
    from examples.customers import create_app

    app = create_app(settings_for(workdir, kind), enforce=(kind != "plain"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@dataclass
class Run:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0  # server CPU (all threads, user + system) per request
    child_cpu_us: float = 0.0  # ... and its child processes', if any

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
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
    return Run(int(total.group(1)), secs, errors, _ms(p50.group(1)), _ms(p99.group(1)))


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


def load(url: str, token: str, connections: int, seconds: float, workdir: Path,
         use_wrk: bool, pid: int | None = None) -> Run:
    kids = children(pid) if pid else []
    before = cpu_seconds(pid) if pid else 0.0
    kids_before = sum(cpu_seconds(k) for k in kids)
    if use_wrk:
        run = wrk_run(url, token, connections, seconds, workdir)
    else:
        run = asyncio.run(_httpx_run(url, token, connections, seconds))
    if pid:
        run.cpu_us = (cpu_seconds(pid) - before) / max(1, run.requests) * 1e6
        run.child_cpu_us = (sum(cpu_seconds(k) for k in kids) - kids_before
                            ) / max(1, run.requests) * 1e6
    return run


def start(kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--dir", str(workdir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
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
                raise SystemExit(f"the {kind} server did not start") from None
            time.sleep(0.1)


def breakdown(workdir: Path, token: str, n: int = 2000) -> list[tuple[str, float, float]]:
    """Per request: wall and this process's CPU microseconds of each step (no HTTP)."""
    from middleware.identity import Authenticator
    from middleware.routes import RouteTable

    auth = Authenticator.from_settings(settings_for(workdir).identity)
    routes = RouteTable.from_csv(REPO / "policies" / "routes.csv")
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
    request = Request(CALLER, PURPOSE, ("identity", "contact"), subject="c-0001")
    http = HttpContext("GET", "/customers/{customer_id}")
    out: list[tuple[str, float, float]] = []

    def timed(label: str, fn: Callable[[], object], count: int = n) -> None:
        began, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            fn()
        out.append((label, (time.perf_counter() - began) / count * 1e6,
                    (time.process_time() - cpu) / count * 1e6))

    async def concurrent(fn: Callable[[], Awaitable[object]], label: str) -> None:
        began, cpu = time.perf_counter(), time.process_time()
        for _ in range(n // 32):
            await asyncio.gather(*(fn() for _ in range(32)))
        count = n // 32 * 32
        out.append((label, (time.perf_counter() - began) / count * 1e6,
                    (time.process_time() - cpu) / count * 1e6))

    timed("identity (verified token, cached)", lambda: auth.authenticate(headers, "127.0.0.1"))
    timed("route match", lambda: routes.match("GET", "/customers/c-0042"))
    for kind in GUARDED:
        # Its own audit store, the same development key as the token.
        folder = workdir / f"breakdown-{kind}"
        folder.mkdir()
        settings = settings_for(folder, kind).model_copy(
            update={"identity": settings_for(workdir).identity})
        where = "journal" if kind == "journal" else "writer thread"
        with Guard.from_settings(settings) as guard:
            if kind == "guarded":
                timed("engine decision", lambda: guard.holder.decide(request))

            async def queued(decision_id: str, guard: Guard = guard) -> None:
                guard.enqueue_outcome(decision_id, 200, http)

            async def steps(guard: Guard = guard, where: str = where) -> None:
                await concurrent(lambda: guard.acheck(request, http),
                                 f"decision + durable event, {where} (32 concurrent)")
                checked = await guard.acheck(request, http)
                await concurrent(lambda: queued(checked.decision_id),
                                 f"queued outcome event, {where}")
                guard.trail.flush()

            asyncio.run(steps())
            out += asgi_stack(settings, guard, token, where)
    return out


class _DecideOnly:
    """Diagnostic only: the guard's decision without the audit write (never ship this)."""

    def __init__(self, guard: Guard) -> None:
        self.holder = guard.holder

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked:
        return Checked(self.holder.decide(request), "bench")

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False) -> Ruling:
        return Ruling(self.holder.decide(request), request, None, {})

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked:
        return Checked(ruling.decision, "bench")

    def post(self, *_: object) -> bool:
        return True

    def enqueue_outcome(self, *_: object) -> bool:
        return True

    async def arecord_denial(self, request: Request, decision: Decision,
                             http: HttpContext | None = None) -> Checked:
        return Checked(decision, "bench")


def asgi_stack(settings: Settings, guard: Guard, token: str, where: str, n: int = 1000
               ) -> list[tuple[str, float, float]]:
    """Per request through the whole ASGI stack, in process, one at a time: wall and CPU."""
    from examples.customers import create_app

    headers = [(b"host", b"svc"), (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", PURPOSE.encode()), (b"user-agent", b"bench")]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"breakdown request answered {message['status']}")

    async def run(app: Callable[..., Awaitable[None]], count: int) -> tuple[float, float]:
        async def one(i: int) -> None:
            path = f"/customers/c-{i % 100 + 1:04d}"
            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "GET", "scheme": "http", "path": path,
                       "raw_path": path.encode(), "root_path": "", "query_string": b"",
                       "headers": headers, "client": ("127.0.0.1", 1),
                       "server": ("svc", 80)}, receive, send)

        began, cpu = time.perf_counter(), time.process_time()
        for start in range(0, count, 32):
            await asyncio.gather(*(one(i) for i in range(start, start + 32)))
        return ((time.perf_counter() - began) / count * 1e6,
                (time.process_time() - cpu) / count * 1e6)

    variants = []
    if where == "writer thread":
        variants += [("ASGI request, plain app", create_app(settings, enforce=False)),
                     ("ASGI request, guard without the audit write",
                      create_app(settings, guard=_DecideOnly(guard)))]
    variants.append((f"ASGI request, guard, durable audit, {where}",
                     create_app(settings, guard=guard)))
    out = []
    for label, app in variants:
        asyncio.run(run(app, 320))
        out.append((f"{label} (32 concurrent)", *asyncio.run(run(app, n))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--latency-duration", type=float, default=4.0,
                        help="seconds per single-connection latency run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load loop")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the in-process cost breakdown")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.dir)
        return

    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    workdir = Path(tempfile.mkdtemp(prefix="guard-bench-http-"))
    sys.path.insert(0, str(REPO))
    from bench._pg import fdatasync_floor
    from guard.cli._token import issue_token

    token = issue_token(settings_for(workdir).identity, CALLER, None, 3600)
    servers = {kind: start(kind, workdir) for kind in KINDS}
    results: dict[str, dict[str, list[Run]]] = {k: {"tput": [], "lat": []} for k in servers}
    try:
        for _, url in servers.values():  # warm up all
            load(url, token, 4, 1.0, workdir, use_wrk)
        for round_no in range(args.rounds):
            turn = round_no % len(KINDS)
            order = list(KINDS[turn:] + KINDS[:turn])
            for kind in order:
                url = servers[kind][1]
                results[kind]["tput"].append(
                    load(url, token, args.connections, args.duration, workdir, use_wrk,
                         pid=servers[kind][0].pid))
                results[kind]["lat"].append(
                    load(url, token, 1, args.latency_duration, workdir, use_wrk))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)

    from guard.audit._jtrail import JournalTrail

    JournalTrail.open(settings_for(workdir, "journal").audit).close()  # the index caught up
    recorded = {}
    for kind in GUARDED:
        with sqlite3.connect(workdir / f"audit-{kind}.db") as conn:
            recorded[kind] = (
                conn.execute("SELECT count(*) FROM audit_event "
                             "WHERE kind = 'decision' AND allowed = 1").fetchone()[0],
                conn.execute("SELECT count(*) FROM audit_event WHERE kind = 'outcome'"
                             ).fetchone()[0])
    steps = [] if args.no_breakdown else breakdown(workdir, token)
    floor = fdatasync_floor(workdir)
    shutil.rmtree(workdir, ignore_errors=True)

    def summary(kind: str) -> tuple[float, float, float, float, float, int, float, float]:
        tput, lat = results[kind]["tput"], results[kind]["lat"]
        return (statistics.median(r.rps for r in tput),
                statistics.median(r.p50_ms for r in tput),
                statistics.median(r.p99_ms for r in tput),
                statistics.median(r.p50_ms for r in lat),
                statistics.median(r.p99_ms for r in lat),
                sum(r.errors for r in tput + lat),
                statistics.median(r.cpu_us for r in tput),
                statistics.median(r.child_cpu_us for r in tput))

    rows = {kind: summary(kind) for kind in KINDS}
    plain = rows["plain"]
    print(f"load generator: {'wrk' if use_wrk else 'httpx'}; {args.rounds} rounds; "
          f"{args.connections} connections x {args.duration:g}s for throughput, "
          f"1 connection x {args.latency_duration:g}s for latency (medians of rounds)")
    print(f"{'app':<30} {'req/s':>8} {'of plain':>9} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p50 c=1':>8} {'p99 c=1':>8} {'errors':>7} {'CPU us/req':>11} {'child CPU':>10}")
    for kind in KINDS:
        row = rows[kind]
        print(f"{LABELS[kind]:<30} {row[0]:>8.0f} {row[0] / plain[0]:>9.1%} {row[1]:>7.2f} "
              f"{row[2]:>7.2f} {row[3]:>8.2f} {row[4]:>8.2f} {row[5]:>7} {row[6]:>11.0f} "
              f"{row[7]:>10.0f}")
    print(f"disk floor (audit folder): append 300 B + fdatasync p50 {floor[0]:.3f} ms, "
          f"p99 {floor[1]:.3f} ms")
    for kind in GUARDED:
        row = rows[kind]
        print(f"{LABELS[kind]}: throughput {row[0] / plain[0]:.1%} of plain (target >= 85%); "
              f"p50 added (c=1) {row[3] - plain[3]:.2f} ms; "
              f"p99 added (c=1) {row[4] - plain[4]:.2f} ms; "
              f"guard CPU {row[6] + row[7] - plain[6]:.0f} us/request (guarded minus plain); "
              f"p99 added (c={args.connections}) {row[2] - plain[2]:.2f} ms")
        requests = sum(r.requests for r in results[kind]["tput"] + results[kind]["lat"])
        print(f"  audit: {recorded[kind][0]} durable allowed decisions and {recorded[kind][1]} "
              f"outcomes for {requests} requests (warm-up included in the store)")
    if steps:
        print("in-process cost per request, microseconds (CPU: this process only, "
              "not the server's):")
        print(f"  {'step':<66} {'wall':>8} {'CPU':>8}")
        for label, wall, cpu in steps:
            print(f"  {label:<66} {wall:>8.1f} {cpu:>8.1f}")
    if any(row[5] for row in rows.values()):
        print("WARNING: some requests failed; the figures are not valid")


if __name__ == "__main__":
    main()
