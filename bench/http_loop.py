"""The event loop's cost of a guarded request, in process, and the cyclic collector's share.

The example service (``examples/customers.py``) with the guard and its audit
journal, called through ASGI with 32 requests at a time (no HTTP server). Prints
the event loop thread's CPU per request and the collector's time and collections.
For instruction counts, which do not move with the machine's load, run it twice
under callgrind with two request counts and divide the difference of the main
thread's totals (and of ``gc_collect_main``'s inclusive cost) by the difference
of the counts::

    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
        .venv/bin/python bench/http_loop.py --requests 960
    valgrind ... bench/http_loop.py --requests 2880    # then callgrind_annotate cg.PID-01

Each request gets header names and values of its own (new bytes objects, as a
server parses them), so what hashing them costs is counted. ``--plain`` calls the
example service without the guard (the floor of the same run).

Usage: python bench/http_loop.py [--requests 6400] [--gc-threshold N] [--gc-freeze]
       [--plain] [--tree DIR]   (another checkout's guard and example, for an A/B run)
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds http.py: as a script, its folder must not shadow the stdlib ``http``.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CONCURRENT = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6400, help="requests measured")
    parser.add_argument("--gc-threshold", type=int, default=None,
                        help="gc.set_threshold first value after the warm-up (default 700)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up")
    parser.add_argument("--plain", action="store_true", help="the example service unguarded")
    parser.add_argument("--tree", type=Path, default=HERE,
                        help="the checkout whose guard and example run (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from examples.customers import create_app
    from guard._guard import Guard
    from guard.cli._token import issue_token
    from guard.config import AuditSettings, IdentitySettings, Settings

    work = Path(tempfile.mkdtemp(prefix="guard-bench-loop-"))
    settings = Settings(
        audit=AuditSettings(store=f"sqlite:///{work / 'audit.db'}",
                            hmac_key=work / "subject-hmac.key",
                            signing_key=work / "audit-signing.key", writer_id="bench"),
        identity=IdentitySettings(dev_key=work / "dev-token.key"))
    token = issue_token(settings.identity, "svc:crm", None, 3600)
    headers = [(b"host", b"svc"), (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management"), (b"user-agent", b"bench")]
    spent = {"seconds": 0.0, "collections": 0.0, "full": 0.0, "began": 0.0}

    def timed(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            spent["began"] = time.perf_counter()
        else:
            spent["seconds"] += time.perf_counter() - spent["began"]
            spent["collections"] += 1
            spent["full"] += _info["generation"] == 2

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise SystemExit(f"a request was answered {message['status']}")

    async def run(app: Callable[..., Awaitable[None]], count: int) -> None:
        async def one(i: int) -> None:
            path = f"/customers/c-{i % 100 + 1:04d}"
            own = [(name[:1] + name[1:], value[:1] + value[1:]) for name, value in headers]
            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "GET", "scheme": "http", "path": path,
                       "raw_path": path.encode(), "root_path": "", "query_string": b"",
                       "headers": own, "client": ("127.0.0.1", 1),
                       "server": ("svc", 80)}, receive, send)

        for start in range(0, count, CONCURRENT):
            await asyncio.gather(*(one(i) for i in range(start, start + CONCURRENT)))

    with Guard.from_settings(settings) as guard:
        app = create_app(settings, enforce=False) if args.plain else create_app(
            settings, guard=guard)

        async def measure() -> tuple[float, float]:
            await run(app, 640)  # warm-up: caches, the first batches
            if args.gc_threshold:
                gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
            if args.gc_freeze:
                gc.freeze()
            gc.callbacks.append(timed)
            began, loop = time.perf_counter(), time.thread_time()
            await run(app, args.requests)
            gc.callbacks.remove(timed)
            return time.perf_counter() - began, time.thread_time() - loop

        wall, loop = asyncio.run(measure())
    shutil.rmtree(work, ignore_errors=True)
    n = args.requests
    print(f"{args.tree.resolve()}{' (plain)' if args.plain else ''}: "
          f"gc threshold {gc.get_threshold()[0]}"
          f"{', frozen' if args.gc_freeze else ''}; {n} requests, {CONCURRENT} at a time: "
          f"wall {wall / n * 1e6:.1f} us, event loop CPU {loop / n * 1e6:.1f} us, "
          f"collector {spent['seconds'] / n * 1e6:.1f} us per request "
          f"({spent['collections']:.0f} collections, {spent['collections'] / n * 1e4:.0f} "
          f"per 10,000 requests; {spent['full']:.0f} full)")


if __name__ == "__main__":
    main()
