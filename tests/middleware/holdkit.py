"""A guarded Starlette service on a journal whose commits a test holds open.

``HeldJournal`` wraps the writer's journal: every append waits for ``release`` (or
fails, ``fail``), so a test can look at what the client got while a decision is
being committed. ``Service`` answers reads in the ways an app can: a whole body, a
stream, a large body, a file, a background task after the body, a start and no body.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from tokenkit import Keys, guard_settings

from guard._errors import AuditUnavailableError
from guard._guard import Guard
from guard.audit._jtrail import JournalTrail
from middleware import GuardMiddleware, RouteTable, guarded
from middleware._record import HELD_BODY

__all__ = ["SECRET", "HeldJournal", "Service", "entered", "service"]

SECRET = b"the customer's phone number"
READ = {"categories": ["contact"], "action": "read", "subject": "customer_id"}


class HeldJournal:
    """The writer's journal, whose appends wait for ``release`` (or fail, ``fail``).

    ``durable`` collects every payload appended and synced, so a test can ask
    whether an event id was durable at a given moment.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.durable: list[bytes] = []

    def append(self, payloads: Sequence[bytes]) -> int:
        self.entered.set()
        if not self.release.wait(30):
            raise AuditUnavailableError("the test never released the journal")
        if self.fail:
            raise AuditUnavailableError("the journal's disk refused the append")
        offset: int = self.inner.append(payloads)
        self.durable.extend(payloads)
        return offset

    def is_durable(self, event_id: str) -> bool:
        return any(event_id.encode() in payload for payload in self.durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class HintedResponse(PlainTextResponse):
    """A response that sends an early hint (an ASGI extension message) before its start."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint",
                    "links": [b"</customers/c-0001/photo>; rel=preload"]})
        await super().__call__(scope, receive, send)


class Endpoint:
    """A raw ASGI endpoint (Starlette calls an object that is not a function as one)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Service:
    """A guarded Starlette app on a journal guard whose commits the test holds."""

    def __init__(self, guard: Guard, settings: Any, journal: HeldJournal) -> None:
        self.guard = guard
        self.journal = journal
        self.ran: list[str] = []
        self.handler_ran = asyncio.Event()
        self.responses: list[weakref.ref[PlainTextResponse]] = []
        """Weak references to the responses the read handler returned."""
        self.background_started = asyncio.Event()
        self.background_release = asyncio.Event()
        self.background_done = False

        @guarded(**READ)
        async def read(request: Request) -> PlainTextResponse:
            self.ran.append("read")
            self.handler_ran.set()
            response = PlainTextResponse(SECRET)
            self.responses.append(weakref.ref(response))
            return response

        @guarded(categories=["contact"], action="write", subject="customer_id")
        async def write(request: Request) -> PlainTextResponse:
            self.ran.append("write")
            self.handler_ran.set()
            return PlainTextResponse(b"updated")

        @guarded(**READ)  # a route that declares read for an unsafe method
        async def forget(request: Request) -> PlainTextResponse:
            self.ran.append("forget")
            self.handler_ran.set()
            return PlainTextResponse(SECRET)

        @guarded(**READ)
        async def hinted(request: Request) -> PlainTextResponse:
            self.handler_ran.set()
            return HintedResponse(SECRET)

        @guarded(**READ)
        async def broken(request: Request) -> PlainTextResponse:
            raise RuntimeError("the database went away")

        async def slow_task() -> None:
            self.background_started.set()
            await self.background_release.wait()
            self.background_done = True

        async def failing_task() -> None:
            self.background_started.set()
            raise RuntimeError("the background task failed")

        @guarded(**READ)
        async def background(request: Request) -> PlainTextResponse:
            return PlainTextResponse(SECRET, background=BackgroundTask(slow_task))

        @guarded(**READ)
        async def failing(request: Request) -> PlainTextResponse:
            return PlainTextResponse(SECRET, background=BackgroundTask(failing_task))

        @guarded(**READ)
        async def large(request: Request) -> PlainTextResponse:
            self.handler_ran.set()
            return PlainTextResponse(SECRET + b"." * HELD_BODY)

        async def chunks() -> AsyncIterator[bytes]:
            yield SECRET
            yield b" (more)"

        @guarded(**READ)
        async def stream(request: Request) -> StreamingResponse:
            self.handler_ran.set()
            return StreamingResponse(chunks())

        async def start_only(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("the database went away after the start")

        async def pathsend(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.pathsend", "path": "/srv/customers/c-0001"})
            self.handler_ran.set()

        self.app = Starlette(routes=[
            Route("/customers/{customer_id}", read),
            Route("/customers/{customer_id}/contact", write, methods=["PUT"]),
            Route("/customers/{customer_id}/forget", forget, methods=["DELETE", "POST"]),
            Route("/customers/{customer_id}/broken", broken),
            Route("/customers/{customer_id}/hinted", hinted),
            Route("/customers/{customer_id}/background", background),
            Route("/customers/{customer_id}/failing", failing),
            Route("/customers/{customer_id}/large", large),
            Route("/customers/{customer_id}/stream", stream),
            Route("/customers/{customer_id}/start-only", guarded(**READ)(Endpoint(start_only))),
            Route("/customers/{customer_id}/file", guarded(**READ)(Endpoint(pathsend))),
        ])
        # No freeze at the first request (no lifespan here): it would move the objects of
        # the requests already in flight out of the collector's lists the tests read.
        self.app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                                routes=RouteTable(()), gc_freeze=False)

    async def call(self, method: str, path: str, token: str,
                   sent: list[dict[str, Any]]) -> None:
        """One request through the ASGI app; what reaches the client is appended to ``sent``.

        A response start is marked ``durable`` when its decision id was durable in the
        journal as it reached the client.
        """
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
                 "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
                 "server": ("svc", 80),
                 "headers": [(b"authorization", f"Bearer {token}".encode()),
                             (b"x-purpose", b"relationship.management")]}
        inbox = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if inbox:
                return inbox.pop()
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                decision_id = dict(message["headers"]).get(b"x-guard-decision-id")
                message = {**message, "durable": decision_id is not None
                           and self.journal.is_durable(decision_id.decode())}
            sent.append(message)

        await self.app(scope, receive, send)


@pytest.fixture
def service(keys: Keys, tmp_path: Path) -> Iterator[Service]:
    """A :class:`Service` whose journal holds every append until the test releases it."""
    settings = guard_settings(tmp_path, keys)
    settings = settings.model_copy(
        update={"audit": settings.audit.model_copy(update={"writer": "journal"})})
    guard = Guard.from_settings(settings)
    trail = guard.trail
    assert isinstance(trail, JournalTrail)
    journal = HeldJournal(trail.writer.journal)
    trail.writer.journal = journal  # type: ignore[assignment]
    built = Service(guard, settings, journal)
    yield built
    journal.release.set()
    built.background_release.set()
    guard.close()


async def entered(journal: HeldJournal) -> None:
    """Wait until the writer is inside an append (the commit is in flight)."""
    assert await asyncio.to_thread(journal.entered.wait, 30)


async def settle() -> None:
    """Let the event loop run what is ready (a few rounds)."""
    for _ in range(20):
        await asyncio.sleep(0)
