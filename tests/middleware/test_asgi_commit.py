"""The middleware's audit rule with the journal's commit held open.

A read's handler runs while nothing is recorded yet; its decision, with the
response's status, is durable before the response's start reaches the client.
A write's decision is durable before its handler starts. A commit that fails
turns the response into a 403 ``audit_unavailable``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, audit_rows, guard_settings

from guard._errors import AuditUnavailableError
from guard._guard import Guard
from guard.audit._jtrail import JournalTrail
from middleware import GuardMiddleware, RouteTable, guarded

pytestmark = pytest.mark.anyio
SECRET = b"the customer's phone number"


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


class Service:
    """A guarded Starlette app on a journal guard whose commits the test holds."""

    def __init__(self, guard: Guard, settings: Any, journal: HeldJournal) -> None:
        self.guard = guard
        self.journal = journal
        self.ran: list[str] = []
        self.handler_ran = asyncio.Event()

        @guarded(categories=["contact"], action="read", subject="customer_id")
        async def read(request: Request) -> PlainTextResponse:
            self.ran.append("read")
            self.handler_ran.set()
            return PlainTextResponse(SECRET)

        @guarded(categories=["contact"], action="write", subject="customer_id")
        async def write(request: Request) -> PlainTextResponse:
            self.ran.append("write")
            self.handler_ran.set()
            return PlainTextResponse(b"updated")

        @guarded(categories=["contact"], action="read", subject="customer_id")
        async def hinted(request: Request) -> PlainTextResponse:
            self.handler_ran.set()
            return HintedResponse(SECRET)

        @guarded(categories=["contact"], action="read", subject="customer_id")
        async def broken(request: Request) -> PlainTextResponse:
            raise RuntimeError("the database went away")

        self.app = Starlette(routes=[
            Route("/customers/{customer_id}", read),
            Route("/customers/{customer_id}/contact", write, methods=["PUT"]),
            Route("/customers/{customer_id}/broken", broken),
            Route("/customers/{customer_id}/hinted", hinted),
        ])
        self.app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                                routes=RouteTable(()))

    async def call(self, method: str, path: str, token: str,
                   sent: list[dict[str, Any]]) -> None:
        """One request through the ASGI app; what reaches the client is appended to ``sent``."""
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
    settings = guard_settings(tmp_path, keys)
    settings = settings.model_copy(
        update={"audit": settings.audit.model_copy(update={"writer": "journal"})})
    guard = Guard.from_settings(settings)
    trail = guard.trail
    assert isinstance(trail, JournalTrail)
    journal = HeldJournal(trail.writer.journal)
    trail.writer.journal = journal  # type: ignore[assignment]
    yield Service(guard, settings, journal)
    journal.release.set()
    guard.close()


async def _entered(journal: HeldJournal) -> None:
    """Wait until the writer is inside an append (the commit is in flight)."""
    assert await asyncio.to_thread(journal.entered.wait, 30)


async def test_a_read_runs_while_nothing_is_recorded_and_starts_only_once_durable(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(
        service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent))
    await service.handler_ran.wait()  # the handler ran before anything was committed
    await _entered(service.journal)  # its decision is being committed ...
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == []  # ... and nothing of the response has left
    service.journal.release.set()
    await request
    start, *body = sent
    assert (start["status"], start["durable"]) == (200, True)  # durable before it left
    assert b"".join(m.get("body", b"") for m in body) == SECRET
    service.guard.trail.flush()
    decision_id = dict(start["headers"])[b"x-guard-decision-id"].decode()
    [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
    assert (row["kind"], row["allowed"], row["action"], row["http_status"]) == (
        "decision", 1, "read", 200)
    assert audit_rows(tmp_path / "audit.db", "kind = 'outcome'") == []  # one event


async def test_a_write_does_not_start_before_its_decision_is_durable(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(service.call(
        "PUT", "/customers/c-0001/contact", keys.mint("rsa", sub="svc:crm"), sent))
    await _entered(service.journal)  # the decision is being committed ...
    for _ in range(20):
        await asyncio.sleep(0)
    assert service.ran == []  # ... and the handler has not started
    assert sent == []
    service.journal.release.set()
    await request
    assert service.ran == ["write"]
    assert (sent[0]["status"], sent[0]["durable"]) == (200, True)
    service.guard.trail.flush()
    decision_id = dict(sent[0]["headers"])[b"x-guard-decision-id"].decode()
    [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
    assert (row["action"], row["http_status"]) == ("write", None)
    outcomes = audit_rows(tmp_path / "audit.db", "decision_ref = ?", (decision_id,))
    assert [(o["kind"], o["http_status"]) for o in outcomes] == [("outcome", 200)]


async def test_a_read_whose_record_fails_is_replaced_by_audit_unavailable(
    service: Service, keys: Keys
) -> None:
    service.journal.fail = True
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    await service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent)
    assert service.ran == ["read"]
    start, *body = sent
    assert start["status"] == 403
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert b"x-guard-decision-id" not in dict(start["headers"])
    text = b"".join(m.get("body", b"") for m in body)
    assert SECRET not in text
    assert b'"reason":"audit_unavailable"' in text
    assert b'"decision_id":null' in text


async def test_a_read_that_raises_before_responding_is_recorded_with_500(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError):
        await service.call("GET", "/customers/c-0001/broken", keys.mint("rsa", sub="svc:crm"),
                           sent)
    service.guard.trail.flush()
    rows = audit_rows(tmp_path / "audit.db", "http_route = ?", ("/customers/{customer_id}/broken",))
    assert [(r["kind"], r["allowed"], r["http_status"]) for r in rows] == [("decision", 1, 500)]


async def test_a_message_before_the_start_waits_for_the_decision_too(
    service: Service, keys: Keys
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(
        service.call("GET", "/customers/c-0001/hinted", keys.mint("rsa", sub="svc:crm"), sent))
    await asyncio.wait_for(service.handler_ran.wait(), 30)  # the app answers ...
    await _entered(service.journal)
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == []  # ... and not even its early hint leaves before the decision is durable
    service.journal.release.set()
    await request
    hint, start, *body = sent
    assert hint["type"] == "http.response.early_hint"
    assert (start["status"], start["durable"]) == (200, True)
    assert b"".join(m.get("body", b"") for m in body) == SECRET
