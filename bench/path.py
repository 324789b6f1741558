"""The guard's Python on the request path before the handler runs, piece by piece.

In one process, on the example service (``examples/customers.py``) with the shipped
policy, ``GET /customers/{customer_id}`` as ``svc:crm`` for
``relationship.management`` (a cached development token, 100 customer ids in turn):

- each piece on its own: the header collection, route resolution, identity,
  the engine decision, the event's fields (``decision_fields``, ``_traced``),
  ``Guard.decide``, ``enforce()`` (the interpreted path, a request's first), the
  middleware's planned judgement (``Planner.judge``, ``Guard.decide`` included: a
  request whose route and token were seen before); route resolution and the planned
  judgement again for a path never asked before (``/customers/n-0000001``, ...: a new
  subject's id in each, as in a service with many data subjects), beside the cost of the
  scope's copy those two pieces include;
- ``GuardMiddleware`` whole, around an app that only answers 200 (its
  ``http.response.start`` held and released as for any read), for a remembered path and
  for a path never asked before, against the same
  app alone and behind a no-op pure-Python middleware with a ``send`` wrapper
  (the floor any Python middleware costs), in the same run;
- the whole example app, plain and guarded.

The audit commit is stubbed out in this script only (``_NoWrite``: the decision
and its event's fields are made as in production, nothing is written), so what
is measured is the Python before the handler, not the journal. Coroutines are
driven to completion without running an event loop (none of them waits); one is
set as the running loop, as a server's is, so the stub's already-durable commit is
a future of it (without one, asking for the running loop raises and is caught on
every call: about 3,000 instructions that a server never pays).

Two measures per piece: µs per call (the best of ``--repeat`` loops of
``--iterations`` calls, the cyclic collector on, start-up's objects frozen out of
its walks with ``gc.freeze()``) and, with ``--callgrind``,
instructions per call counted by ``valgrind --tool=callgrind`` (the same loop
run ``--calls`` times between two markers, the empty loop subtracted; repeatable
on a loaded machine), with the allocations that count towards the cyclic
collector's first threshold (calls of the interpreter's ``_PyObject_GC_Link``)
and the collections in the loop. The UTC time and the load average are printed.
``--tree DIR`` measures another checkout's guard, middleware and example with
this script (an A/B with one script).

Usage: ``.venv/bin/python bench/path.py [--iterations 20000] [--repeat 5]
[--callgrind] [--calls 2000] [--no-timing] [--tree DIR] [--only WORD,...] [--register N]``

``--register N`` gives N other subjects (random keyed digests) a restriction in the
guard's subject register, as a service with a register in use has; by default the
register is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
# As a script, this folder must not shadow the stdlib (bench/http.py is ``http``).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


def _tree() -> Path:
    """The checkout measured: ``--tree DIR`` (read before anything is imported), else this one."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--tree" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--tree="):
            return Path(arg.split("=", 1)[1]).resolve()
    return REPO


TREE = _tree()
sys.path.insert(0, str(TREE))

from bench._stub import EVENT_ID, NoAudit  # noqa: E402
from guard._guard import Guard, Ruling  # noqa: E402
from guard._types import HttpContext, Request  # noqa: E402
from guard.rights import EntryKind, Record  # noqa: E402

try:
    from middleware.asgi import wanted_headers
except ImportError:  # a version whose __call__ collects the headers inline: the same loop

    def wanted_headers(raw: Any, wanted: frozenset[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in raw:
            if name in wanted:
                headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        return headers

PURPOSE = "relationship.management"
CALLER = "svc:crm"
TEMPLATE = "/customers/{customer_id}"
MARKER = "os_getppid"
"""The C function the callgrind run dumps its counters before (``os.getppid()``)."""
GC_LINK = "_PyObject_GC_Link"
"""The interpreter's C function that counts one allocation towards the collector's first
threshold (a container not taken from a free list); its calls are the allocations counted."""
GC_DEL = "PyObject_GC_Del"
"""... and the one that frees such an object (a call takes one off the count)."""
GC_COLLECT = "gc_collect_main"
"""The collector's collection (its calls: collections)."""

Message = dict[str, Any]


class _NoWrite(NoAudit):
    """The real guard's decisions and event fields, with the audit commit stubbed out.

    For this measurement only: every commit answers at once with an id, nothing is written.
    """

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.holder = guard.holder
        # The guard's own methods, not wrappers: a request pays one call, as in production
        # (the planner asks decide_asked for a request it saw before, as of the guard).
        self.decide = guard.decide  # type: ignore[method-assign]
        self.decide_asked = guard.decide_asked

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False, current: Any = None) -> Ruling:
        return self.guard.decide(request, http, per_category=per_category, current=current)


class _Held(_NoWrite):
    """As :class:`_NoWrite`, but each commit is still pending when it is queued (as in a
    server, where the journal's writer makes it durable later): :func:`drive_held` resolves
    it once the request waits for it."""

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        return asyncio.get_running_loop().create_future()


def drive_held(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that waits once, for its pending commit: resolve it, then finish it."""
    waited = coro.send(None)
    if not isinstance(waited, asyncio.Future) or waited.done():
        coro.close()
        raise RuntimeError("the measured coroutine did not wait for its commit")
    waited.set_result(EVENT_ID)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the measured coroutine waited twice")


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits to its end, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the measured coroutine waited: it needs an event loop")


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise SystemExit(f"the measured request was answered {message['status']}")


async def ok_app(scope: Message, receive: Callable[[], Awaitable[Message]],
                 send: Callable[[Message], Awaitable[None]]) -> None:
    """The smallest handler: a 200 with a two-byte body."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


class Noop:
    """A pass-through pure-Python ASGI middleware with a ``send`` wrapper: the floor."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def scopes(token: str) -> list[Message]:
    """One ASGI scope per customer id (c-0001 .. c-0100), as uvicorn builds them."""
    headers = [(b"host", b"svc"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
               (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", PURPOSE.encode())]
    out = []
    for n in range(1, 101):
        path = f"/customers/c-{n:04d}"
        out.append({"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                    "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
                    "raw_path": path.encode(), "root_path": "", "query_string": b"",
                    "headers": headers, "client": ("127.0.0.1", 40000),
                    "server": ("127.0.0.1", 8000), "state": {}})
    return out


def fresh(data: bytes) -> bytes:
    """A new bytes object equal to ``data`` (its hash not computed yet)."""
    return data[:1] + data[1:]


def pieces(workdir: Path) -> tuple[list[tuple[str, Callable[[], object]]], Callable[[], None]]:
    """The measured calls (label, call) and a function that closes what they opened."""
    from opentelemetry.trace import INVALID_SPAN

    from examples.customers import create_app
    from guard.audit._event import decision_fields
    from guard.audit._jtrail import _traced
    from guard.cli._token import issue_token
    from guard.config import AuditSettings, IdentitySettings, Settings
    from middleware import GuardMiddleware
    from middleware._enforce import enforce
    from middleware.identity import Authenticator

    settings = Settings(
        audit=AuditSettings(store=f"sqlite:///{workdir / 'audit.db'}",
                            hmac_key=workdir / "subject-hmac.key",
                            signing_key=workdir / "audit-signing.key", writer_id="bench"),
        identity=IdentitySettings(dev_key=workdir / "dev-token.key"),
    )
    settings.sidecar.gc_freeze = False  # the collector as measured before: no start-up freeze
    token = issue_token(settings.identity, CALLER, None, 3600)
    auth = Authenticator.from_settings(settings.identity, announce=False)
    guard = Guard.from_settings(settings)
    stub = _NoWrite(guard)
    guarded = create_app(settings, guard=stub, authenticator=auth)
    plain = create_app(settings, enforce=False)
    stack = guarded.build_middleware_stack()
    guarded.middleware_stack = stack
    mw: Any = stack
    while not isinstance(mw, GuardMiddleware):
        mw = mw.app
    all_scopes = scopes(token)
    mw.resolve(all_scopes[0])  # walks the example app's routes once
    mw_ok: Any = GuardMiddleware.__new__(GuardMiddleware)
    mw_ok.__dict__.update(mw.__dict__)
    mw_ok.app = ok_app  # the example's routes and declarations, a handler that only answers
    mw_held: Any = GuardMiddleware.__new__(GuardMiddleware)  # ... whose commits wait
    mw_held.__dict__.update(mw_ok.__dict__)
    mw_held.guard = _Held(guard)
    noop = Noop(ok_app)
    wanted = mw._wanted

    headers = _collect(all_scopes[0]["headers"], wanted)
    resolved = mw.resolve(all_scopes[0])
    if resolved is None or resolved.rule is None or resolved.rule.template != TEMPLATE:
        raise SystemExit(f"the example app did not resolve {TEMPLATE}: {resolved}")
    request = Request(CALLER, PURPOSE, resolved.rule.categories, resolved.rule.action,
                      "c-0001")
    http = HttpContext("GET", TEMPLATE)
    decision = guard.holder.decide(request, guard.register)
    if not decision.allowed:
        raise SystemExit(f"the measured request is not allowed: {decision.reason}")
    turn = [0]

    def scope() -> Message:
        """A fresh copy, as a server makes per request (the app writes its own keys in),
        with header names and values of their own (a server parses them into new bytes
        objects for every request, whose hashes are not computed yet)."""
        i = turn[0] = (turn[0] + 1) % 100
        s = dict(all_scopes[i])
        s["state"] = {}
        s["headers"] = [(fresh(name), fresh(value)) for name, value in s["headers"]]
        return s

    fresh_ids = itertools.count(1)

    def new_scope() -> Message:
        """As :func:`scope`, for a path never asked before (a new subject's id in it)."""
        s = scope()
        path = f"/customers/n-{next(fresh_ids):07d}"
        s["path"], s["raw_path"] = path, path.encode()
        return s

    def whole(app: Any, make: Callable[[], Message] = scope) -> Callable[[], object]:
        return lambda: drive(app(make(), _receive, _send))

    def enforce_one() -> object:
        s = scope()
        hdrs = _collect(s["headers"], wanted)
        res = mw.resolve(s)
        return drive(enforce(stub, auth, mw.routes, method="GET", path=s["path"],
                             headers=hdrs, peer="127.0.0.1", purpose_header="x-purpose",
                             resolved=res, defer_reads=True))

    loop = asyncio.new_event_loop()
    asyncio.events._set_running_loop(loop)  # as a server's; never run: nothing waits

    def close() -> None:
        asyncio.events._set_running_loop(None)
        loop.close()
        guard.close()

    planner = getattr(mw, "_planner", None)  # a version that plans: its judgement alone

    def planned() -> object:
        if planner is None:
            return None
        return planner.judge(scope(), "GET", INVALID_SPAN)

    def planned_new() -> object:
        if planner is None:
            return None
        return planner.judge(new_scope(), "GET", INVALID_SPAN)

    register = guard.register
    filled = int(os.environ.get("GUARD_BENCH_REGISTER", "0"))
    if filled and register is not None:  # --register N: N other subjects with an entry
        rng = random.Random(12)
        restricted = (Record(EntryKind.RESTRICTION, "", date(2020, 1, 1)),)
        register.index.load((rng.getrandbits(64), rng.getrandbits(64), restricted)
                            for _ in range(filled))
    measured: list[tuple[str, Callable[[], object]]] = [
        ("empty loop (subtracted)", lambda: None),
        ("header collection", lambda: _collect(scope()["headers"], wanted)),
        ("route resolution (AppRoutes.resolve)", lambda: mw.resolve(scope())),
        ("route resolution, a new path", lambda: mw.resolve(new_scope())),
        ("scope copy alone (in the new path's pieces)", new_scope),
        ("identity (cached token)", lambda: auth.authenticate(headers, "127.0.0.1")),
        ("engine decision (holder.decide)", lambda: guard.holder.decide(request, register)),
        ("decision_fields", lambda: decision_fields(request, decision, http, 3)),
        ("_traced (fields with no trace ids)", lambda: _traced({})),
        ("Guard.decide (decision + fields)", lambda: guard.decide(request, http)),
        ("enforce() with headers + resolution", enforce_one),
        ("planned judgement (Planner.judge)", planned),
        ("planned judgement, a new path", planned_new),
        ("bare app (200, no middleware)", whole(ok_app)),
        ("no-op middleware + bare app", whole(noop)),
        ("GuardMiddleware + bare app", whole(mw_ok)),
        ("GuardMiddleware + bare app, a new path", whole(mw_ok, new_scope)),
        ("GuardMiddleware + bare app, commit pending", lambda: drive_held(
            mw_held(scope(), _receive, _send))),
        ("example app, plain", whole(plain)),
        ("example app, guarded (commit stubbed)", whole(stack)),
    ]
    only = [part for part in os.environ.get("GUARD_BENCH_ONLY", "").split(",") if part]
    if only:  # --only: the empty loop and the pieces named
        measured = measured[:1] + [m for m in measured[1:] if any(o in m[0] for o in only)]
    for label, call in measured:  # each answers, and its caches are warm
        for _ in range(300):
            call()
        del label
    # What start-up built stays out of the collector's walks (as a long-running
    # service's old objects do): each piece pays for what it allocates, not for a
    # full collection of the imported frameworks that happens to fall in its loop.
    gc.collect()
    gc.freeze()

    return measured, close


def _collect(raw: Any, wanted: frozenset[bytes]) -> dict[str, str]:
    """The header collection ``GuardMiddleware.__call__`` does."""
    return wanted_headers(raw, wanted)


def timed(measured: list[tuple[str, Callable[[], object]]], iterations: int, repeat: int
          ) -> dict[str, float]:
    """µs per call: the best of ``repeat`` loops of ``iterations`` calls (collector on)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for label, call in measured:
            gc.collect()
            began = time.perf_counter()
            for _ in range(iterations):
                call()
            took = (time.perf_counter() - began) / iterations * 1e6
            best[label] = min(best.get(label, took), took)
    return best


def counted(measured: list[tuple[str, Callable[[], object]]], calls: int) -> None:
    """Under callgrind: each piece's loop between two ``os.getppid()`` markers."""
    for _label, call in measured:
        gc.collect()
        os.getppid()  # dumps what ran since the last marker (the collection)
        for _ in range(calls):
            call()
        os.getppid()  # dumps the loop


class Counts(NamedTuple):
    """What callgrind counted in one piece's loop."""

    instructions: int
    links: int
    """Allocations that count towards the collector's first threshold (:data:`GC_LINK`)."""
    frees: int
    """Frees of such objects (:data:`GC_DEL`)."""
    collections: int


def callgrind(calls: int, workdir: Path) -> list[Counts]:
    """Run this script's ``counted`` under callgrind; what each piece's loop cost."""
    out = workdir / "callgrind.out"
    command = ["valgrind", "--tool=callgrind", f"--dump-before={MARKER}",
               "--compress-strings=no", f"--callgrind-out-file={out}", sys.executable, __file__,
               "--inner", "--calls", str(calls), "--dir", str(workdir), "--tree", str(TREE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"callgrind failed:\n{done.stderr[-3000:]}")
    counts = []
    parts = sorted(workdir.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    for part in parts:
        text = part.read_text()
        found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        called = _calls(text, (GC_LINK, GC_DEL, GC_COLLECT))
        counts.append(Counts(int(found.group(1)) if found else 0, called[GC_LINK],
                             called[GC_DEL], called[GC_COLLECT]))
    # dump 1: start-up to the first marker; then, per piece, its loop and a collection
    return counts[1::2]


def _calls(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """Calls of the C functions ``names`` in one callgrind dump (its ``cfn=``/``calls=`` lines).

    The dump is written with ``--compress-strings=no``: every line names its function.
    """
    called = dict.fromkeys(names, 0)
    target: str | None = None
    for line in text.splitlines():
        if line.startswith("cfn="):
            target = line[4:]
        elif line.startswith("calls=") and target in called:
            called[target] += int(line[6:].split()[0])
            target = None
        elif line.startswith("fn="):
            target = None
    return called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per call with valgrind's callgrind")
    parser.add_argument("--calls", type=int, default=2000, help="calls per piece under callgrind")
    parser.add_argument("--no-timing", action="store_true", help="callgrind counts only")
    parser.add_argument("--tree", type=Path, default=REPO,
                        help="the checkout whose guard, middleware and example are measured "
                             "(default: this one; this script either way)")
    parser.add_argument("--only", default="",
                        help="measure only the pieces whose label holds one of these "
                             "comma-separated words (the totals below the table need all)")
    parser.add_argument("--register", type=int, default=0,
                        help="give this many other subjects an entry in the guard's register "
                             "(default: none, an empty register)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        os.environ["GUARD_BENCH_ONLY"] = args.only  # read by pieces(), in this and the inner run
    if args.register:
        os.environ["GUARD_BENCH_REGISTER"] = str(args.register)  # ... as is this
    if args.inner:
        measured, close = pieces(args.dir)
        try:
            counted(measured, args.calls)
        finally:
            close()
        return

    began = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="guard-bench-path-"))
    try:
        labels: list[str] = []
        micro: dict[str, float] = {}
        if not args.no_timing:
            measured, close = pieces(workdir / "timing")
            labels = [label for label, _ in measured]
            try:
                micro = timed(measured, args.iterations, args.repeat)
            finally:
                close()
        irs: list[Counts] = []
        if args.callgrind:
            if shutil.which("valgrind") is None:
                raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
            cg = workdir / "callgrind"
            cg.mkdir()
            irs = callgrind(args.calls, cg)
            if not labels:
                measured, close = pieces(workdir / "labels")
                labels = [label for label, _ in measured]
                close()
        _report(labels, micro, irs, args, began, load)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report(labels: list[str], micro: dict[str, float], irs: list[Counts],
            args: argparse.Namespace, began: str, load: tuple[float, float, float]) -> None:
    calls = args.calls
    empty_us = micro.get(labels[0], 0.0)
    empty = irs[0] if irs else Counts(0, 0, 0, 0)
    us = {k: v - empty_us for k, v in micro.items()}
    ir = {label: (irs[i].instructions - empty.instructions) / calls
          for i, label in enumerate(labels) if i < len(irs)}
    links = {label: (irs[i].links - empty.links) / calls
             for i, label in enumerate(labels) if i < len(irs)}
    print(f"{TREE}: {began}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'piece':45} {'µs/call':>9} {'instr/call':>11} {'gc allocs':>9} "
          f"{'collections':>11}")
    for i, label in enumerate(labels[1:], 1):
        shown_us = f"{us[label]:9.2f}" if label in us else f"{'-':>9}"
        shown_ir = f"{ir[label]:11,.0f}" if label in ir else f"{'-':>11}"
        shown_links = f"{links[label]:9.1f}" if label in links else f"{'-':>9}"
        shown_gc = f"{irs[i].collections:11d}" if i < len(irs) else f"{'-':>11}"
        print(f"{label:45} {shown_us} {shown_ir} {shown_links} {shown_gc}")
    bare, noop, guard = ("bare app (200, no middleware)", "no-op middleware + bare app",
                         "GuardMiddleware + bare app")
    held = "GuardMiddleware + bare app, commit pending"
    plain, guarded = "example app, plain", "example app, guarded (commit stubbed)"
    for name, table, unit in (("µs", us, "µs"), ("instr", ir, "instructions"),
                              ("gc allocs", links, "allocations")):
        if all(k in table for k in (bare, noop, guard, plain, guarded,
                                    "Guard.decide (decision + fields)")):
            print(f"guard before the handler ({name}): {table[guard] - table[bare]:,.2f} {unit}"
                  f" over the bare app; floor (no-op middleware) "
                  f"{table[noop] - table[bare]:,.2f}; example app guarded - plain "
                  f"{table[guarded] - table[plain]:,.2f}")
            decide = table["Guard.decide (decision + fields)"]
            print(f"  of which the middleware and enforce() ({name}, the guard before the "
                  f"handler - Guard.decide): {table[guard] - table[bare] - decide:,.2f} {unit}")
            new = "GuardMiddleware + bare app, a new path"
            if new in table:
                print(f"  a path asked for the first time ({name}): {table[new] - table[bare]:,.2f}"
                      f" {unit} over the bare app ({table[new] - table[guard]:+,.2f} over a "
                      "remembered path)")
            if held in table:
                print(f"  a read held until its commit is durable, as in a server ({name}): "
                      f"{table[held] - table[bare]:,.2f} {unit} over the bare app")
    if micro:
        print(f"timing: best of {args.repeat} x {args.iterations} calls, collector on "
              "(start-up frozen)")
    if irs:
        print(f"callgrind: {calls} calls per piece, the empty loop "
              f"({empty.instructions / calls:,.0f} instr/call) subtracted; gc allocs: "
              f"calls of {GC_LINK} per call (objects counted towards the collector's first "
              f"threshold); collections: of gen 0-2 in the piece's {calls} calls")


if __name__ == "__main__":
    main()
