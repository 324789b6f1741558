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
example service without the guard (the floor of the same run). ``--starlette`` serves the
read from a Starlette app instead (the same route, declaration and JSON answer, no FastAPI:
no dependency solving, exit stacks or response model), guarded or ``--plain``.

``--callgrind`` does that in one run: the measured requests lie between two calls of
``os.getppid()`` (``--dump-before=os_getppid``), and the event loop thread's
instructions between them are divided by the count. ``--audit-sink none`` is the
guard with nothing recorded (``Guard.begin_commit`` resolved at once: a floor of the
decision and the middleware, as ``bench/http.py --floors`` serves it); ``--write``
asks ``PUT /customers/{id}/contact`` with a JSON body instead of the read;
``--concurrent N`` requests at a time (1: one after the other, each waiting for its
own commit).

``--census`` counts what 32 reads (``--concurrent``) keep alive while they wait for their
commit: the journal's append is held, and every object the collector tracks that was
not there before is counted by type, per read (``--census-top`` types listed).

``--subjects N`` asks N customer ids in turn (default 100: each path is asked again every
100 requests; with more ids than requests, every path is new, as in a service with many
data subjects). ``--callgrind --keep FILE`` keeps the measured window's profile of the loop
thread for ``callgrind_annotate --inclusive=yes FILE``.

``--callers N`` gives N tokens (the example's ``svc:crm``, each with a lifetime of its own,
so N ``Authorization`` values) that take turns on each path: a path's successive requests
come with the next token in turn (with ``--subjects 1``, request i with token i mod N).
``--no-memo`` switches the planner's memo of a repeated read off (its entries never found,
the guard asked with ``decide`` as for a path's first request; an entry is still made per
read): the floor the memo is measured against.

Usage: python bench/http_loop.py [--requests 6400] [--gc-threshold N] [--gc-freeze]
       [--plain] [--starlette] [--audit-sink journal|none] [--write] [--concurrent 32]
       [--subjects 100] [--callers 1] [--no-memo]
       [--callgrind [--keep FILE]] [--census [--census-top 40]]
       [--tree DIR]   (another checkout's guard and example, for an A/B run)
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds http.py: as a script, its folder must not shadow the stdlib ``http``.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import collections
import gc
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

HERE = Path(__file__).resolve().parent.parent
CONCURRENT = 32
WARM_UP = 640


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6400, help="requests measured")
    parser.add_argument("--gc-threshold", type=int, default=None,
                        help="gc.set_threshold first value after the warm-up (default 700)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the warm-up")
    parser.add_argument("--plain", action="store_true", help="the example service unguarded")
    parser.add_argument("--starlette", action="store_true",
                        help="the read served by a Starlette app (no FastAPI), not the example")
    parser.add_argument("--tree", type=Path, default=HERE,
                        help="the checkout whose guard and example run (default: this one)")
    parser.add_argument("--audit-sink", choices=("journal", "none"), default="journal",
                        help="none: the guard's commits resolved at once, nothing recorded "
                             "(a floor of the decision and the middleware)")
    parser.add_argument("--write", action="store_true",
                        help="PUT /customers/{id}/contact with a JSON body (default: GET)")
    parser.add_argument("--concurrent", type=int, default=CONCURRENT,
                        help="requests at a time (1: one after the other)")
    parser.add_argument("--subjects", type=int, default=100,
                        help="customer ids asked in turn (the example holds 100: the others are "
                             "answered 404, by the app, after the guard allowed them)")
    parser.add_argument("--callers", type=int, default=1,
                        help="tokens taking turns on each path (each path's next request comes "
                             "with the next token)")
    parser.add_argument("--no-memo", action="store_true",
                        help="the planner's memo of a repeated read switched off")
    parser.add_argument("--callgrind", action="store_true",
                        help="run under callgrind: the event loop's instructions per request")
    parser.add_argument("--keep", type=Path, default=None,
                        help="with --callgrind: copy the measured window's profile of the "
                             "loop thread here (for callgrind_annotate --inclusive=yes)")
    parser.add_argument("--census", action="store_true",
                        help="count the objects each waiting read keeps alive (commits held)")
    parser.add_argument("--census-top", type=int, default=40, help="types listed by --census")
    args = parser.parse_args()
    if args.callgrind:
        callgrind(args.requests, args.keep)
        return
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
    settings.sidecar.gc_freeze = False  # the collector as measured before (--gc-freeze)
    if args.callers < 1:
        raise SystemExit("--callers must be at least 1")
    if args.no_memo:
        memo_off()
    body = b'{"email": "c@example.com"}'
    tokens = [issue_token(settings.identity, "svc:crm", None, 3600 + k)
              for k in range(args.callers)]
    callers = []
    for token in tokens:
        headers = [(b"host", b"svc"), (b"authorization", f"Bearer {token}".encode()),
                   (b"x-purpose", b"relationship.management"), (b"user-agent", b"bench")]
        if args.write:
            headers += [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]
        callers.append(headers)
    spent = {"seconds": 0.0, "collections": 0.0, "full": 0.0, "began": 0.0}

    def timed(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            spent["began"] = time.perf_counter()
        else:
            spent["seconds"] += time.perf_counter() - spent["began"]
            spent["collections"] += 1
            spent["full"] += _info["generation"] == 2

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body if args.write else b"",
                "more_body": False}

    answers = (200,) if args.subjects <= 100 else (200, 404)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] not in answers:
            raise SystemExit(f"a request was answered {message['status']}")

    async def run(app: Callable[..., Awaitable[None]], count: int, first: int = 0) -> None:
        async def one(i: int) -> None:
            path = f"/customers/c-{i % args.subjects + 1:04d}"
            if args.write:
                path += "/contact"
            headers = callers[i // args.subjects % args.callers]  # the path's next caller
            own = [(name[:1] + name[1:], value[:1] + value[1:]) for name, value in headers]
            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "PUT" if args.write else "GET", "scheme": "http", "path": path,
                       "raw_path": path.encode(), "root_path": "", "query_string": b"",
                       "headers": own, "client": ("127.0.0.1", 1),
                       "server": ("svc", 80)}, receive, send)

        step = args.concurrent
        if step == 1:
            for i in range(first, first + count):
                await one(i)
            return
        for start in range(first, first + count, step):
            await asyncio.gather(*(one(i) for i in range(start, start + step)))

    with Guard.from_settings(settings) as guard:
        if args.audit_sink == "none":  # a floor only: nothing is recorded
            guard.begin_commit = _resolved  # type: ignore[method-assign]
        if args.starlette:
            if args.write:
                raise SystemExit("--starlette serves the read only")
            app = starlette_app(None if args.plain else guard, settings)
        else:
            app = create_app(settings, enforce=False) if args.plain else create_app(
                settings, guard=guard)

        async def measure() -> tuple[float, float]:
            await run(app, WARM_UP)  # warm-up: caches, the first batches
            if args.gc_threshold:
                gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
            if args.gc_freeze:
                gc.freeze()
            gc.callbacks.append(timed)
            os.getppid()  # callgrind's mark: the measured requests start
            began, loop = time.perf_counter(), time.thread_time()
            await run(app, args.requests, WARM_UP)  # after the warm-up's ids
            wall_loop = time.perf_counter() - began, time.thread_time() - loop
            os.getppid()  # ... and end
            gc.callbacks.remove(timed)
            return wall_loop

        if args.census:
            asyncio.run(census(app, run, guard, args.concurrent, args.census_top))
            shutil.rmtree(work, ignore_errors=True)
            return
        wall, loop = asyncio.run(measure())
    shutil.rmtree(work, ignore_errors=True)
    n = args.requests
    kind = ("Starlette, " if args.starlette else "") + (
        "plain" if args.plain else "guarded, no audit sink" if args.audit_sink == "none"
        else "guarded") + (f", {args.callers} callers a path" if args.callers > 1 else "") + (
        ", memo off" if args.no_memo else "")
    print(f"{args.tree.resolve()} ({kind}, {'PUT' if args.write else 'GET'}): "
          f"gc threshold {gc.get_threshold()[0]}"
          f"{', frozen' if args.gc_freeze else ''}; {n} requests, {args.concurrent} at a time: "
          f"wall {wall / n * 1e6:.1f} us, event loop CPU {loop / n * 1e6:.1f} us, "
          f"collector {spent['seconds'] / n * 1e6:.1f} us per request "
          f"({spent['collections']:.0f} collections, {spent['collections'] / n * 1e4:.0f} "
          f"per 10,000 requests; {spent['full']:.0f} full)")


async def census(app: Callable[..., Awaitable[None]],
                 run: Callable[..., Awaitable[None]], guard: Any, reads: int, top: int) -> None:
    """Print the objects alive per read while ``reads`` reads wait for their commit.

    The bench's own per read are counted too: its coroutine and the gather's callback
    context (2; a server's connection keeps objects of its own instead).
    """
    await run(app, WARM_UP)  # warm-up: caches, the first batches
    writer = guard.trail.writer
    entered, release = threading.Event(), threading.Event()
    inner = writer.journal

    class Held:  # the journal's append waits until released
        def append(self, payloads: Any) -> Any:
            entered.set()
            release.wait(30)
            return inner.append(payloads)

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    writer.journal = Held()
    # A first read holds the writer in its append, so that all the measured reads queue.
    first = asyncio.ensure_future(run(app, reads, 10_000))
    await asyncio.to_thread(entered.wait, 30)
    for _ in range(50):
        await asyncio.sleep(0)
    gc.collect()
    gc.disable()
    count0 = gc.get_count()[0]
    before = {id(o) for o in gc.get_objects()}
    tasks = [asyncio.ensure_future(run(app, reads, 20_000))]  # one gather of them
    for _ in range(400):  # until every read waits for its commit
        await asyncio.sleep(0)
    count1 = gc.get_count()[0]
    mine = {id(before), id(tasks)}
    new = [o for o in gc.get_objects() if id(o) not in before and id(o) not in mine]
    kinds = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}"
        + (f" {o.cr_code.co_qualname}" if hasattr(o, "cr_code") else "")
        for o in new)
    del new
    waiting = len(writer._queue)
    release.set()
    await asyncio.gather(first, *tasks)
    gc.enable()
    writer.journal = inner
    print(f"{reads} reads waiting ({waiting} entries queued): "
          f"{sum(kinds.values()) / reads:.2f} tracked objects alive per read, "
          f"young count {(count1 - count0) / reads:+.2f} per read")
    for name, n in kinds.most_common(top):
        print(f"  {n / reads:6.2f}  {name}")


def starlette_app(guard: Any, settings: Any) -> Callable[..., Awaitable[None]]:
    """The example's ``GET /customers/{customer_id}`` on Starlette alone; guarded unless None."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from examples.customers import customers
    from middleware import GuardMiddleware, RouteTable, guarded

    data = customers()

    @guarded(categories=["identity", "contact"], subject="customer_id")
    async def summary(request: Request) -> JSONResponse:
        customer_id = request.path_params["customer_id"]
        found = data.get(customer_id)
        if found is None:
            return JSONResponse({"detail": "no such customer"}, status_code=404)
        return JSONResponse({"customer_id": customer_id, "identity": found["identity"],
                             "contact": found["contact"]})

    app = Starlette(routes=[Route("/customers/{customer_id}", summary)])
    if guard is not None:
        app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                           routes=RouteTable(()), gc_freeze=False)
    return app


def memo_off() -> None:
    """Switch the planner's memo of a repeated read off: its entries are never found (the
    caller looked up, the guard asked with ``decide``), as for a path's first request."""
    from middleware import _plan

    class Off(dict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            return default

    init = _plan.Planner.__init__

    def off(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.seen = Off()
        self.asking = None

    _plan.Planner.__init__ = off  # type: ignore[method-assign]


def _resolved(ruling: Any, status: int | None = None) -> asyncio.Future[str]:
    """``Guard.begin_commit`` of ``--audit-sink none``: nothing recorded, resolved at once."""
    ruling.queued = True
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("unrecorded")
    return done


def callgrind(requests: int, keep: Path | None = None) -> None:
    """This script with the same options under callgrind: the loop's instructions per request."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="guard-bench-loop-cg-"))
    out = work / "cg"
    argv, skip = [], False
    for a in sys.argv[1:]:  # --callgrind and --keep PATH are this parent's
        if skip or a == "--callgrind" or a.startswith("--keep"):
            skip = a == "--keep"
            continue
        argv.append(a)
    command = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
               "--dump-before=os_getppid", f"--callgrind-out-file={out}", sys.executable,
               str(Path(__file__).resolve()), *argv]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        if done.returncode != 0:
            raise SystemExit(f"callgrind failed:\n{done.stderr[-3000:]}")
        # dump 1: start-up and warm-up; dump 2: the measured requests (thread 1: the loop)
        text = (work / "cg.2-01").read_text()
        if keep is not None:
            shutil.copyfile(work / "cg.2-01", keep)
        found = re.search(r"^summary:\s+(\d+)", text, re.M)
        if found is None:
            raise SystemExit("callgrind wrote no summary")
        print(done.stdout.strip())
        print(f"event loop thread: {int(found.group(1)) / requests:,.0f} instructions per "
              f"request (callgrind, {requests} requests)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
