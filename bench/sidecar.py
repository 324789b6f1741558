"""The sidecar's cost at one connection, beside the floors measured in the same run.

One run starts, on loopback, each in its own process:
  * nginx returning a small body (the upstream), and a second nginx server that
    proxies to it (``proxy_pass``, keep-alive): the floor of a proxy hop that
    is not Python;
  * pass-through proxies: uvicorn with the sidecar's ``Proxy`` and no guard, one
    per forwarder, side by side: the httptools client (``H1Transport``, what
    the sidecar uses: the floor of a Python proxy hop) and aiohttp's client
    (when aiohttp is installed; not a dependency);
  * ``guard sidecar`` (one uvicorn worker) in proxy mode in front of the same
    nginx, its audit trail on the working disk (``--audit-dir``, default a
    temporary folder);
  * a second, identical sidecar with its audit trail on tmpfs (/dev/shm), where
    a commit's sync costs next to nothing.

Then, with ``wrk`` (a separate process) at one connection, back to back, in
rounds that alternate the targets: nginx direct, nginx proxy, the pass-throughs,
each sidecar's proxy mode (a real decision, a durable audit record, the
forward), each sidecar's check endpoint (``/v1/check`` with ``X-Original-URI``,
as nginx ``auth_request`` sends it: the decision durable before the answer) and
its ``/healthz`` (no decision, no audit: the floor of the check endpoint).
Beside them: the disk's own floor (append 300 B + ``fdatasync`` in the audit
folder, p50/p99, before and after the rounds); the CPU each thread of the
disk sidecar spent per request (``/proc/PID/task``) in its proxy and check
runs; the check endpoint's throughput at ``--connections`` against
``/healthz``; and the audit records written against the requests judged.

Targets (issue 12): check endpoint p50 added over /healthz <= 0.35 ms; proxy
mode p50 added over nginx direct <= 1 ms.

``--profile`` instead runs the disk sidecar in this script's process under
cProfile (the event loop's thread), drives proxy and check requests at one
connection and prints where the event loop's time went. ``--in-process N``
sends N check requests straight into the sidecar's ASGI app (no server, audit
on tmpfs unless ``--audit-dir``): the event loop's CPU and latency per check;
with ``--profile check``, where each check's time went; under
``valgrind --tool=callgrind --separate-threads=yes`` two such runs (N=100 and
N=600) give the instructions per check of each thread.

Usage: python bench/sidecar.py [--duration 5] [--rounds 2] [--connections 32]
       [--audit-dir DIR] [--profile proxy|check|both] [--in-process N]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py sits beside this file: as a script, its folder must not shadow the stdlib.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import argparse
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from bench._pg import fdatasync_floor

REPO = Path(__file__).resolve().parent.parent
NGINX = os.environ.get("GUARD_NGINX", "/usr/sbin/nginx")
GUARD = Path(sys.executable).with_name("guard")
CALLER, PURPOSE = "svc:crm", "relationship.management"
ROUTES = "GET, /customers/{customer_id}, identity contact, read, customer_id\n"
UVICORN = {"log_level": "warning", "access_log": False, "proxy_headers": False,
           "server_header": False}
"""The uvicorn settings of ``guard sidecar``, for the servers this script runs itself."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"server on port {port} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def start_nginx(work: Path, port: int, proxy_port: int) -> subprocess.Popen[bytes]:
    """nginx: the upstream on ``port``, a keep-alive proxy to it on ``proxy_port``."""
    prefix = work / "nginx"
    (prefix / "logs").mkdir(parents=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\nerror_log {prefix}/logs/error.log warn;\n"
        f"pid {prefix}/nginx.pid;\nevents {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; client_body_temp_path {prefix}/body; "
        f"proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fcgi; "
        f"uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;\n"
        f'  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}\n'
        f"  upstream up {{ server 127.0.0.1:{port}; keepalive 16; }}\n"
        f"  server {{ listen 127.0.0.1:{proxy_port}; location / {{ proxy_pass http://up; "
        f'proxy_http_version 1.1; proxy_set_header Connection ""; }} }}\n}}\n'
    )
    log = prefix / "logs" / "stderr.log"
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    wait_for(port, proc, log)
    wait_for(proxy_port, proc, log)
    return proc


def sidecar_env(work: Path, audit_dir: Path, dev_key: Path) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "routes.csv").write_text(ROUTES)
    return {
        **os.environ,
        "GUARD_CONFIG": os.devnull,
        "GUARD_POLICY__DIR": str(REPO / "policies"),
        "GUARD_POLICY__WATCH": "false",
        "GUARD_AUDIT__STORE": f"sqlite:///{audit_dir / 'audit.db'}",
        "GUARD_AUDIT__HMAC_KEY": str(work / "hmac.key"),
        "GUARD_AUDIT__SIGNING_KEY": str(work / "signing.key"),
        "GUARD_AUDIT__WRITER_ID": "bench-sidecar",
        "GUARD_IDENTITY__DEV_KEY": str(dev_key),
        "GUARD_SIDECAR__ROUTES": str(work / "routes.csv"),
        "GUARD_SIDECAR__LOG_LEVEL": "warning",
    }


def start_sidecar(work: Path, port: int, upstream: str, env: dict[str, str]
                  ) -> subprocess.Popen[bytes]:
    log = work / "sidecar.log"
    proc = subprocess.Popen(
        [str(GUARD), "sidecar", "--port", str(port), "--upstream", upstream],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    wait_for(port, proc, log)
    return proc


FORWARDERS = ("httptools", "aiohttp")
"""The pass-through's forwarders compared: the httptools client (``H1Transport``) and
aiohttp's client (C parser; only when installed)."""


def start_passthrough(work: Path, port: int, upstream: str, forwarder: str
                      ) -> subprocess.Popen[bytes]:
    log = work / f"passthrough-{forwarder}.log"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-passthrough", str(port), upstream, forwarder],
        cwd=work, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    wait_for(port, proc, log)
    return proc


class AiohttpTransport:
    """aiohttp's client behind the sidecar's transport interface (for the comparison only)."""

    def __init__(self) -> None:
        self._session: Any = None

    async def send(self, method: bytes, url: Any, headers: list[tuple[bytes, bytes]],
                   content: Any, extensions: dict[str, Any]) -> Any:
        import aiohttp
        import httpx
        from multidict import CIMultiDict

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200), cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept",
                                                          "Accept-Encoding"))
        seconds = extensions["timeout"]["read"]
        target = f"http://{url.host.decode()}:{url.port}{url.target.decode('latin-1')}"
        try:
            answer = await self._session.request(
                method.decode(), target, allow_redirects=False, data=content,
                headers=CIMultiDict((k.decode("latin-1"), v.decode("latin-1"))
                                    for k, v in headers),
                timeout=aiohttp.ClientTimeout(sock_read=seconds, sock_connect=seconds))
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc)) from exc

        class Body:
            async def __aiter__(self) -> Any:
                async for chunk in answer.content.iter_any():
                    yield chunk

            async def aclose(self) -> None:
                answer.release()

        return SimpleNamespace(status=answer.status, headers=list(answer.raw_headers),
                               body=Body())

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def serve_passthrough(port: int, upstream: str, forwarder: str) -> None:
    """uvicorn with one forwarder and nothing else (no route, identity or audit)."""
    import uvicorn
    from starlette.types import Receive, Scope, Send

    from middleware.sidecar._h1 import H1Transport
    from middleware.sidecar._proxy import Proxy
    transport: Any = (H1Transport(max_connections=200) if forwarder == "httptools"
                      else AiohttpTransport())
    proxy = Proxy(transport, upstream)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await transport.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await proxy.forward(scope, receive, send, add={})

    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN)  # type: ignore[arg-type]


SIDECAR_FORWARDER = "httptools"
"""The forwarder ``guard sidecar`` uses for an ``http://`` upstream."""


def _passthrough(forwarder: str) -> str:
    mark = ", the sidecar's" if forwarder == SIDECAR_FORWARDER else ""
    return f"pass-through {forwarder}{mark} (floor)"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process, summed by thread name."""
    out: dict[str, float] = defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def dev_token(work: Path) -> str:
    import jwt

    from middleware.identity import dev_key_id, load_or_create_dev_key

    key = load_or_create_dev_key(work / "dev.key")
    now = int(time.time())
    claims = {"sub": CALLER, "aud": "purpose-guard", "iss": "purpose-guard-dev",
              "iat": now, "exp": now + 3600}
    return jwt.encode(claims, key, "EdDSA", headers={"kid": dev_key_id(key.public_key())})


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * _UNIT[found.group(2)]


def wrk(url: str, headers: dict[str, str], connections: int, seconds: float, work: Path) -> Run:
    script = work / "bench.lua"
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*?(\d+) timeout", out)
    errors = (int(bad.group(1)) if bad else 0) + (int(errs.group(1)) if errs else 0)
    return Run(rps, p50, p99, total, errors)


@dataclass
class Target:
    label: str
    url: str
    headers: dict[str, str]
    pid: int | None = None  # the sidecar whose threads' CPU is read during the run
    judged: bool = False  # each request is a decision of the disk sidecar


def profile(args: argparse.Namespace) -> None:
    """Serve the disk sidecar here under cProfile, drive it with wrk, print the profile."""
    import cProfile
    import io
    import pstats
    import threading

    import uvicorn

    from guard.config import load_settings
    from middleware.sidecar import create_app

    work = Path(tempfile.mkdtemp(prefix="guard-bench-sidecar-"))
    audit = args.audit_dir or work / "audit"
    audit.mkdir(parents=True, exist_ok=True)
    up, nproxy, port = free_port(), free_port(), free_port()
    nginx = start_nginx(work, up, nproxy)
    token = dev_token(work)
    os.environ.update(sidecar_env(work / "disk", audit, work / "dev.key"))
    os.environ["GUARD_SIDECAR__UPSTREAM"] = f"http://127.0.0.1:{up}"
    app = create_app(load_settings())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **UVICORN))
    profiler = cProfile.Profile()

    def run() -> None:
        profiler.enable()
        try:
            server.run()
        finally:
            profiler.disable()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        guarded = {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}
        check = {**guarded, "X-Original-URI": "/customers/c-1", "X-Original-Method": "GET"}
        runs = [(f"http://127.0.0.1:{port}/customers/c-1", guarded),
                (f"http://127.0.0.1:{port}/v1/check", check)]
        counts = []
        for url, headers in runs if args.profile == "both" else [
                runs[0 if args.profile == "proxy" else 1]]:
            counts.append(wrk(url, headers, 1, args.duration, work).requests)
    finally:
        server.should_exit = True
        thread.join()
        nginx.terminate()
        nginx.wait()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"event-loop thread profile, {sum(counts):,} requests ({args.profile})")
    print(text.getvalue())
    shutil.rmtree(work, ignore_errors=True)


BREAKDOWN = {
    "request headers (purpose lines, target)": ("_headers.py:judged_headers", "_check.py:_target",
                                                "_paths.py:judgeable_path"),
    "identity (authenticate)": ("identity.py:authenticate",),
    "route match": ("routes.py:match",),
    "decision (Guard.decide)": ("_guard.py:decide",),
    "hand-over to the journal writer (acommit)": ("_guard.py:acommit",),
    "  of it, waking the writer (Condition.notify)": ("threading.py:notify",),
    "writer wakes the loop (self-pipe read)": ("_read_from_self",),
    "futures settled (per batch)": ("_jwriter.py:_settle",),
    "whole check, wait for durability included": ("_app.py:__call__",),
}
"""Where a check's event-loop time goes: label -> functions (file:name) summed, inclusive."""


def in_process(args: argparse.Namespace) -> None:
    """``--in-process N`` check requests straight into the sidecar's ASGI app, one at a time.

    No server and no socket: the event loop's CPU per check (``time.thread_time``),
    the latency per call, the collector's runs; under callgrind
    (``--separate-threads=yes``) the difference of two counts (e.g. N=100 and
    600) is the instructions per check of each thread. With ``--profile check``
    the calls run under cProfile and :data:`BREAKDOWN` is printed.
    """
    import asyncio
    import gc

    from guard.config import load_settings
    from middleware.sidecar import create_app

    work = Path(tempfile.mkdtemp(prefix="guard-bench-sidecar-"))
    audit = args.audit_dir or Path(tempfile.mkdtemp(prefix="guard-bench-sidecar-",
                                                    dir="/dev/shm"))
    token = dev_token(work)
    os.environ.update(sidecar_env(work / "s", audit, work / "dev.key"))
    app = create_app(load_settings())
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", PURPOSE.encode()), (b"x-original-uri", b"/customers/c-1"),
               (b"x-original-method", b"GET")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/v1/check", "raw_path": b"/v1/check",
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8181)}
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    async def run() -> tuple[list[float], float, int]:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        life = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
        await outbox.get()
        for _ in range(300):  # warm: token cache, pools, the writer's first batches
            await app(dict(scope), receive, send)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        runs = sum(s["collections"] for s in gc.get_stats())
        latency, cpu = [], time.thread_time()
        for _ in range(args.in_process):
            start = time.perf_counter()
            await app(dict(scope), receive, send)
            latency.append(time.perf_counter() - start)
        cpu = time.thread_time() - cpu
        runs = sum(s["collections"] for s in gc.get_stats()) - runs
        if profiler is not None:
            profiler.disable()
            _breakdown(profiler, args.in_process)
        await inbox.put({"type": "lifespan.shutdown"})
        await life
        return latency, cpu, runs

    latency, cpu, runs = asyncio.run(run())
    if statuses != {200}:
        sys.exit(f"the checks were answered {sorted(statuses)}")
    latency.sort()
    count = len(latency)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
          f"{os.getloadavg()[0]:.1f}; {count:,} checks in process, audit in {audit}: event loop "
          f"CPU {cpu / count * 1e6:.1f} µs per check, latency p50 {latency[count // 2] * 1e6:.1f}"
          f" µs, p99 {latency[int(count * 0.99)] * 1e6:.1f} µs; collector runs {runs}")
    shutil.rmtree(work, ignore_errors=True)
    if args.audit_dir is None:
        shutil.rmtree(audit, ignore_errors=True)


def _breakdown(profiler: Any, count: int) -> None:
    import pstats

    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    print(f"where a check's event-loop time went (cProfile, inclusive, µs per check of {count:,})")
    for label, names in BREAKDOWN.items():
        total = sum(entry[3] for (file, _, fn), entry in stats.items()
                    if any((file + ":" + fn).endswith(name) for name in names))
        print(f"  {label:50}{total / count * 1e6:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32, help="for the throughput runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--audit-dir", type=Path, default=None,
                        help="folder of the disk-backed audit store (default: a temp folder)")
    parser.add_argument("--profile", choices=("proxy", "check", "both"), default=None,
                        help="profile the disk sidecar's event loop instead of measuring")
    parser.add_argument("--in-process", type=int, default=0, metavar="N",
                        help="N check requests straight into the ASGI app (no server)")
    parser.add_argument("--serve-passthrough", nargs=3, metavar=("PORT", "UPSTREAM", "FORWARDER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_passthrough:
        serve_passthrough(int(args.serve_passthrough[0]), *args.serve_passthrough[1:])
        return
    if args.in_process:
        in_process(args)
        return
    for tool in (NGINX, "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install nginx wrk")
    if args.profile:
        profile(args)
        return

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="guard-bench-sidecar-"))
    shm = Path(tempfile.mkdtemp(prefix="guard-bench-sidecar-", dir="/dev/shm"))
    disk_audit = args.audit_dir or work / "audit"
    disk_audit.mkdir(parents=True, exist_ok=True)
    up_port, nproxy_port = free_port(), free_port()
    forwarders = [name for name in FORWARDERS if name != "aiohttp" or _has("aiohttp")]
    pass_ports = {name: free_port() for name in forwarders}
    sc_port, shm_port = free_port(), free_port()
    procs = [start_nginx(work, up_port, nproxy_port)]
    try:
        upstream = f"http://127.0.0.1:{up_port}"
        for name, pass_port in pass_ports.items():
            procs.append(start_passthrough(work, pass_port, upstream, name))
        token = dev_token(work)
        sidecar = start_sidecar(work / "disk", sc_port, upstream,
                                sidecar_env(work / "disk", disk_audit, work / "dev.key"))
        procs.append(sidecar)
        shm_sidecar = start_sidecar(work / "shm", shm_port, upstream,
                                    sidecar_env(work / "shm", shm, work / "dev.key"))
        procs.append(shm_sidecar)
        guarded = {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}
        check = {**guarded, "X-Original-URI": "/customers/c-1", "X-Original-Method": "GET"}
        path = "/customers/c-1"
        sc, sh = f"http://127.0.0.1:{sc_port}", f"http://127.0.0.1:{shm_port}"
        targets = [
            Target("nginx direct (the upstream)", f"{upstream}{path}", {}),
            Target("nginx proxy_pass (floor: proxy hop)",
                   f"http://127.0.0.1:{nproxy_port}{path}", {}),
            *(Target(_passthrough(name), f"http://127.0.0.1:{pass_port}{path}", {})
              for name, pass_port in pass_ports.items()),
            Target("sidecar proxy, audit on disk", f"{sc}{path}", guarded, sidecar.pid, True),
            Target("sidecar proxy, audit on tmpfs", f"{sh}{path}", guarded, shm_sidecar.pid),
            Target("/healthz, disk sidecar (floor)", f"{sc}/healthz", {}),
            Target("check endpoint, audit on disk", f"{sc}/v1/check", check, sidecar.pid, True),
            Target("/healthz, tmpfs sidecar (floor)", f"{sh}/healthz", {}),
            Target("check endpoint, audit on tmpfs", f"{sh}/v1/check", check, shm_sidecar.pid),
        ]
        judged = 0  # requests the disk sidecar decided (each must have its record)
        for target in targets:  # warm up (pools, caches, pages); all must pass
            warm = wrk(target.url, target.headers, 1, 1, work)
            if warm.errors or not warm.requests:
                sys.exit(f"{target.url} answers errors: see the logs in {work}")
            judged += warm.requests if target.judged else 0
        floor_before = fdatasync_floor(disk_audit)
        runs: dict[str, list[Run]] = defaultdict(list)
        threads: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for target in order:
                before = thread_cpu(target.pid) if target.pid else {}
                run = wrk(target.url, target.headers, 1, args.duration, work)
                if target.pid:
                    after = thread_cpu(target.pid)
                    for name, spent in after.items():
                        threads[target.label][name].append(
                            (spent - before.get(name, 0.0)) / max(1, run.requests) * 1e6)
                runs[target.label].append(run)
                judged += run.requests if target.judged else 0
        floor_after = fdatasync_floor(disk_audit)
        checks, health = [], []
        check_cpu = []
        for _ in range(args.rounds):
            before_cpu = cpu_seconds(sidecar.pid)
            run = wrk(f"{sc}/v1/check", check, args.connections, args.duration, work)
            check_cpu.append((cpu_seconds(sidecar.pid) - before_cpu) / max(1, run.requests) * 1e6)
            checks.append(run)
            judged += run.requests
            health.append(wrk(f"{sc}/healthz", {}, args.connections, args.duration, work))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)

    with sqlite3.connect(disk_audit / "audit.db") as conn:
        decisions = conn.execute(
            "SELECT count(*) FROM audit_event WHERE kind='decision'").fetchone()[0]
        outcomes = conn.execute(
            "SELECT count(*) FROM audit_event WHERE kind='outcome'").fetchone()[0]
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(shm, ignore_errors=True)

    med = statistics.median
    p50 = {label: med(r.p50_ms for r in rs) for label, rs in runs.items()}
    p99 = {label: med(r.p99_ms for r in rs) for label, rs in runs.items()}
    errors = sum(r.errors for rs in runs.values() for r in rs) + sum(r.errors for r in checks)
    print(f"{started}; load average {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs; "
          f"wrk, one connection, {args.rounds} rounds of {args.duration:.0f} s")
    print(f"disk floor in the audit folder (append 300 B + fdatasync): p50 / p99 "
          f"{floor_before[0]:.3f} / {floor_before[1]:.3f} ms before the rounds, "
          f"{floor_after[0]:.3f} / {floor_after[1]:.3f} ms after")
    base = {
        "nginx proxy_pass (floor: proxy hop)": "nginx direct (the upstream)",
        **{_passthrough(name): "nginx direct (the upstream)" for name in forwarders},
        "sidecar proxy, audit on disk": "nginx direct (the upstream)",
        "sidecar proxy, audit on tmpfs": "nginx direct (the upstream)",
        "check endpoint, audit on disk": "/healthz, disk sidecar (floor)",
        "check endpoint, audit on tmpfs": "/healthz, tmpfs sidecar (floor)",
    }
    print(f"{'one connection':46}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}"
          f"  over")
    for target in targets:
        label = target.label
        line = f"{label:46}{p50[label]:>9.3f}{p99[label]:>9.3f}"
        if label in base:
            ref = base[label]
            line += f"{p50[label] - p50[ref]:>11.3f}{p99[label] - p99[ref]:>11.3f}  {ref}"
        print(line)
    proxy_added = p50["sidecar proxy, audit on disk"] - p50["nginx direct (the upstream)"]
    check_added = p50["check endpoint, audit on disk"] - p50["/healthz, disk sidecar (floor)"]
    hop = p50[_passthrough(SIDECAR_FORWARDER)] - p50["nginx direct (the upstream)"]
    print(f"targets, audit on disk: check endpoint added p50 {check_added:.3f} ms (<= 0.35: "
          f"{'met' if check_added <= 0.35 else 'NOT met'}); proxy added p50 {proxy_added:.3f} ms "
          f"(<= 1: {'met' if proxy_added <= 1.0 else 'NOT met'}); of which the Python proxy "
          f"hop alone {hop:.3f} ms, the guard over the hop {proxy_added - hop:.3f} ms")
    print("CPU per request of each thread of the sidecar (µs, median of the rounds):")
    for label, by_thread in threads.items():
        parts = {name: med(values) for name, values in by_thread.items()}
        shown = ", ".join(f"{name} {us:.0f}" for name, us in
                          sorted(parts.items(), key=lambda kv: -kv[1]) if us >= 0.5)
        print(f"  {label}: total {sum(parts.values()):.0f} = {shown}")
    check_rps, health_rps = med(r.rps for r in checks), med(r.rps for r in health)
    print(f"check endpoint, {args.connections} connections: {check_rps:,.0f} decisions/s, "
          f"p50 {med(r.p50_ms for r in checks):.2f} ms, p99 {med(r.p99_ms for r in checks):.2f} "
          f"ms, {med(check_cpu):.0f} µs sidecar CPU per decision; /healthz {health_rps:,.0f} "
          f"req/s (check / healthz = {check_rps / health_rps:.2f})")
    print(f"audit records (disk sidecar): {decisions:,} decisions, {outcomes:,} outcomes; "
          f"requests it judged (wrk's counts): {judged:,}; non-2xx or timeouts: {errors}")


if __name__ == "__main__":
    main()
