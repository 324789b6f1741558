"""What a guarded request leaves for the cyclic collector: no cycles, nothing kept once done.

The collector runs when the objects allocated outnumber those freed by its
threshold, and each run walks the young objects alive: a request that leaves a
reference cycle, or whose objects outlive it, makes it run more often and walk
more. These tests call the real middleware on a real journal guard (over httpx's
ASGITransport, or straight through ASGI with the commit held open).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from holdkit import HeldJournal, Service, entered, service
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, guard_settings

import guard
import middleware
from guard._guard import Guard, Ruling
from guard.audit._jwriter import _Item
from middleware import GuardMiddleware, RouteTable, guarded

__all__ = ["service"]

OURS = (str(Path(middleware.__file__).parent), str(Path(guard.__file__).parent / "_guard.py"))
"""The enforcement's own code (its frames and functions are recognised by file)."""
BURST = 32


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off for the test (what is unreachable stays until collected)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def _app(guard: Guard | None, settings: Any) -> Starlette:
    """A read, a write and a public route; behind the guard when ``guard`` is given."""

    @guarded(categories=["contact"], action="read", subject="customer_id")
    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse("phone")

    @guarded(categories=["contact"], action="write", subject="customer_id")
    async def write(request: Request) -> PlainTextResponse:
        return PlainTextResponse("updated")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/customers/{customer_id}", read),
        Route("/customers/{customer_id}/contact", write, methods=["PUT"]),
        Route("/healthz", health),
    ])
    if guard is not None:  # no freeze at the first request: these tests count what is walked
        app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                           routes=RouteTable(()), gc_freeze=False)
    return app


async def _call(app: Starlette, method: str, path: str, headers: dict[str, str]) -> int:
    """One request straight through ASGI (no client of its own to leave garbage); its status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("svc", 80),
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    inbox = [{"type": "http.disconnect"}, {"type": "http.request", "body": b""}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop() if len(inbox) > 1 else inbox[0]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def _requests(app: Starlette, keys: Keys, rounds: int) -> list[int]:
    """Allowed reads and writes, refusals (no token, a purpose not granted), 404s, public."""
    token = keys.mint("rsa", sub="svc:crm")
    good = {"authorization": f"Bearer {token}", "x-purpose": "relationship.management"}
    statuses: list[int] = []
    for n in range(rounds):
        path = f"/customers/c-{n % 7:04d}"
        statuses += await asyncio.gather(
            _call(app, "GET", path, good),
            _call(app, "PUT", path + "/contact", good),
            _call(app, "GET", path, {}),
            _call(app, "GET", path, {**good, "x-purpose": "marketing.campaigns"}),
            _call(app, "GET", "/nowhere", good),
            _call(app, "GET", "/healthz", {}),
        )
    return statuses


async def _garbage(app: Starlette, keys: Keys) -> tuple[list[int], int]:
    """Statuses of 120 requests, and the unreachable objects they left (collector off)."""
    await _requests(app, keys, 2)  # first use: the app's routes walked, caches filled
    gc.collect()
    statuses = await _requests(app, keys, 20)
    return statuses, gc.collect()


def test_guarded_requests_leave_no_more_cyclic_garbage_than_the_plain_app(
    keys: Keys, tmp_path: Path, no_collector: None
) -> None:
    settings = guard_settings(tmp_path, keys)
    with Guard.from_settings(settings) as journal_guard:
        garbage = {}
        for name, behind in (("plain", None), ("guarded", journal_guard)):
            statuses, garbage[name] = asyncio.run(_garbage(_app(behind, settings), keys))
            # every way of answering was taken (the guard refuses an undeclared route)
            assert ({200, 401, 403} if behind else {200, 404}) <= set(statuses)
    assert garbage["guarded"] <= garbage["plain"], garbage


def _ours(code: types.CodeType | None) -> bool:
    return code is not None and code.co_filename.startswith(OURS)


@pytest.mark.anyio
async def test_a_read_waiting_for_its_decision_keeps_few_objects_of_the_guard_alive(
    service: Service, keys: Keys, no_collector: None
) -> None:
    token = keys.mint("rsa", sub="svc:crm")
    sent: list[list[dict[str, Any]]] = [[] for _ in range(BURST)]
    calls = [asyncio.ensure_future(service.call("GET", f"/customers/c-{n:04d}", token, sent[n]))
             for n in range(BURST)]
    try:
        await entered(service.journal)  # the commits are held: every read waits
        for _ in range(200):  # until every handler has returned and its response waits
            await asyncio.sleep(0)
            young = gc.get_objects(generation=0)
            frames = [o for o in young
                      if isinstance(o, types.CoroutineType) and _ours(o.cr_code)]
            waiting = [o for o in frames if o.cr_code.co_qualname == "GuardMiddleware.__call__"
                       and type(o.cr_await).__name__ == "FutureIter"]  # awaits a future
            if len(waiting) == BURST:
                break
        else:
            pytest.fail(f"the reads never all waited for their decisions: {frames}")
        assert not any(s for s in sent), "a response left before its decision was durable"
        names = [o.cr_code.co_qualname for o in frames]
        closures = [o for o in young if isinstance(o, types.FunctionType) and _ours(o.__code__)]
        rulings = sum(1 for o in young if type(o) is Ruling)  # freed once queued
        items = sum(1 for o in young if type(o) is _Item)  # nothing made per commit
        watched = sum(1 for o in young if type(o) is tuple  # the deadline watch holds the fields
                      and any(isinstance(x, asyncio.Future) for x in o)
                      and any(isinstance(x, dict) for x in o))  # not to_thread's arguments
        del young, frames, waiting
    finally:
        service.journal.release.set()
        await asyncio.gather(*calls)
    # The middleware's call, awaiting the commit's future itself: no coroutine more.
    assert len(names) == BURST, sorted(set(names))
    assert not closures, closures[:3]
    # None of these per waiting read (one each would be BURST, one every other read half
    # of it): the young objects are the whole process's, and a stray one (asyncio's handle
    # of a future, another thread's event) is no read's; an exact 0 failed on one such tuple.
    assert rulings <= 2, rulings
    assert items <= 2, items
    assert watched <= 2, watched
    assert all(s[0]["status"] == 200 and s[0]["durable"] for s in sent)


def _finished_futures() -> int:
    """Futures alive that resolved with an event's id (a finished request's commit)."""
    return sum(1 for o in gc.get_objects()
               if type(o) is asyncio.Future and o.done() and not o.cancelled()
               and o.exception() is None and isinstance(o.result(), str))


def test_finished_reads_leave_nothing_of_theirs_with_the_guard(
    keys: Keys, tmp_path: Path
) -> None:
    settings = guard_settings(tmp_path, keys)
    token = keys.mint("rsa", sub="svc:crm")
    good = {"authorization": f"Bearer {token}", "x-purpose": "relationship.management"}
    gc.collect()
    before = _finished_futures()  # what earlier tests in this process left
    with Guard.from_settings(settings) as journal_guard:
        app = _app(journal_guard, settings)

        async def main() -> list[int]:
            kept = []
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://svc") as client:
                for _ in range(3):
                    burst = await asyncio.gather(*(
                        client.get(f"/customers/c-{n:04d}", headers=good) for n in range(BURST)))
                    assert {r.status_code for r in burst} == {200}
                    assert (await client.get("/customers/c-0001", headers=good)).status_code == 200
                    kept.append(_finished_futures() - before)
            return kept

        kept = asyncio.run(main())
    # At most the last request's own commit, not one per request served before it.
    assert max(kept) <= 1, kept


def _fastapi(guard: Guard, settings: Any) -> FastAPI:
    """A guarded FastAPI read (its exit stacks in the scope for the call's length)."""
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    @guarded(categories=["contact"], action="read", subject="customer_id")
    async def read(customer_id: str) -> dict[str, str]:
        return {"phone": "phone"}

    app.add_middleware(GuardMiddleware, guard=guard, settings=settings, routes=RouteTable(()),
                       gc_freeze=False)  # the objects counted stay in the collector's view
    return app


async def _waiting(reads: int) -> None:
    """Return once ``reads`` reads wait for their commit, their app's call over."""
    for _ in range(400):
        await asyncio.sleep(0)
        waiting = [o for o in gc.get_objects(generation=0)
                   if isinstance(o, types.CoroutineType)
                   and o.cr_code.co_qualname == "GuardMiddleware.__call__"
                   and type(o.cr_await).__name__ == "FutureIter"]
        if len(waiting) == reads:
            return
    pytest.fail("the reads never all waited for their decisions")


@pytest.mark.anyio
@pytest.mark.parametrize("around", [False, True])
async def test_a_waiting_read_keeps_none_of_what_the_app_kept_in_the_scope_for_its_call(
    keys: Keys, tmp_path: Path, no_collector: None, around: bool
) -> None:
    settings = guard_settings(tmp_path, keys)
    token = keys.mint("rsa", sub="svc:crm")
    with Guard.from_settings(settings) as journal_guard:
        journal = HeldJournal(journal_guard.trail.writer.journal)  # type: ignore[attr-defined]
        journal_guard.trail.writer.journal = journal  # type: ignore[attr-defined]
        inner = _fastapi(journal_guard, settings)
        marker = ({}, {})

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if around:  # an app around this one set its exception handlers first
                scope["starlette.exception_handlers"] = marker
            await inner(scope, receive, send)

        scopes: list[dict[str, Any]] = []
        sent: list[list[dict[str, Any]]] = [[] for _ in range(BURST)]

        async def call(n: int) -> None:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "GET", "scheme": "http", "path": f"/customers/c-{n:04d}",
                     "raw_path": b"", "root_path": "", "query_string": b"",
                     "client": ("127.0.0.1", 5000), "server": ("svc", 80),
                     "headers": [(b"authorization", f"Bearer {token}".encode()),
                                 (b"x-purpose", b"relationship.management")]}
            scopes.append(scope)

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def send(message: dict[str, Any]) -> None:
                sent[n].append(message)

            await app(scope, receive, send)

        calls = [asyncio.ensure_future(call(n)) for n in range(BURST)]
        try:
            await entered(journal)
            await _waiting(BURST)
            stacks = sum(type(v) is contextlib.AsyncExitStack
                         for scope in scopes for v in scope.values())
            kept = [sorted(k for k in scope if k.startswith(("fastapi_", "starlette.")))
                    for scope in scopes]
            early = [s for s in sent if s]  # nothing left before its decision was durable
        finally:
            journal.release.set()
            await asyncio.gather(*calls)
    assert early == []
    assert all(s[0]["status"] == 200 for s in sent)
    if around:  # not the guarded app's to drop
        assert stacks == 3 * BURST, stacks
        assert all("starlette.exception_handlers" in k for k in kept), kept[:1]
    else:  # its exit stacks are exited: nothing of them lives on while the read waits
        assert stacks == 0, stacks
        assert kept == [[]] * BURST, kept[:1]
