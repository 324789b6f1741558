"""Enforcement: bounded input, no subject ids in logs, aborted outcomes, 401s name the subject."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from tokenkit import Keys, audit_rows, guard_settings

from examples.customers import create_app
from guard._guard import Guard
from guard.audit import (
    EventFilter,
    load_hmac_key,
    open_store,
    pseudonymise,
    query_events,
    subject_report,
)
from middleware import Authenticator, Caller, GuardMiddleware, RouteTable, guarded

pytestmark = pytest.mark.anyio
HUGE = 4 * 1024 * 1024
# The documented bounds (docs/security.md, "Bounded input and the audit disk").
MAX_PURPOSE, MAX_CALLER, MAX_METHOD, CUT_MARK = 200, 256, 32, "…"
ROUTES_CSV = Path(__file__).resolve().parents[2] / "policies" / "routes.csv"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("bounds")
    config = guard_settings(base, keys, trusted_proxies=["10.0.0.0/8"],
                            proxy_secret_file=keys.proxy_file)
    guard = Guard.from_settings(config)
    yield {"app": create_app(config, guard=guard), "guard": guard, "settings": config,
           "db": base / "audit.db", "hmac": load_hmac_key(base / "subject-hmac.key")}
    guard.close()


@pytest.fixture
async def client(env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=env["app"]),
                                 base_url="http://svc") as c:
        yield c


def _row(env: dict[str, Any], decision_id: str) -> dict[str, Any]:
    rows = audit_rows(env["db"], "event_id = ?", (decision_id,))
    assert len(rows) == 1
    return rows[0]


# --- item 4: a request cannot put more than the bound into the trail or the answer ---

async def test_a_4mb_purpose_without_a_token_is_refused_and_stored_cut(
    client: httpx.AsyncClient, env: dict[str, Any],
) -> None:
    response = await client.get("/customers/c-0001", headers={"x-purpose": "p" * HUGE})
    assert response.status_code == 403
    assert len(response.content) < 2048  # never echoed whole
    body = response.json()
    assert body["reason"] == "malformed_request"
    assert len(body["purpose"]) == MAX_PURPOSE
    assert body["purpose"].endswith(CUT_MARK)
    row = _row(env, body["decision_id"])
    assert (row["reason"], row["caller"]) == ("malformed_request", "")
    assert len(row["purpose"]) <= MAX_PURPOSE
    assert row["rule"] == ("check:malformed_request:purpose_length",)


async def test_an_oversized_purpose_with_a_token_records_the_caller(
    client: httpx.AsyncClient, env: dict[str, Any], keys: Keys,
) -> None:
    token = keys.mint("rsa", sub="svc:crm")
    response = await client.get("/customers/c-0001", headers={
        "authorization": f"Bearer {token}", "x-purpose": "relationship." + "m" * 300})
    assert response.status_code == 403
    row = _row(env, response.json()["decision_id"])
    assert row["caller"] == "svc:crm"
    assert len(row["purpose"]) == MAX_PURPOSE


async def test_an_oversized_caller_id_from_any_authenticator_is_refused_and_cut(
    env: dict[str, Any],
) -> None:
    class Plugged(Authenticator):
        """A site's own identity check that lets a long caller id through."""

        def authenticate(self, headers: Any, peer: str | None) -> Caller:
            return Caller("svc:" + "x" * HUGE, None, "jwt")

    app = Starlette(routes=[Route("/customers/{customer_id}", _never)])
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable.from_csv(ROUTES_CSV),
                       authenticator=Plugged([], audience="a", issuer="i"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        response = await c.get("/customers/c-0001",
                               headers={"x-purpose": "relationship.management"})
    assert response.status_code == 403
    assert len(response.content) < 2048
    row = _row(env, response.json()["decision_id"])
    assert (row["reason"], row["rule"]) == ("malformed_request",
                                            ("check:malformed_request:caller_length",))
    assert len(row["caller"]) == MAX_CALLER
    assert row["caller"].endswith(CUT_MARK)


async def _never(request: Request) -> PlainTextResponse:
    raise AssertionError("the handler must not run")


async def test_an_oversized_caller_header_from_a_trusted_proxy_stores_nothing_of_it(
    env: dict[str, Any], keys: Keys,
) -> None:
    transport = httpx.ASGITransport(app=env["app"], client=("10.1.2.3", 4444))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        response = await c.get("/customers/c-0001", headers={
            "x-caller": "svc:" + "x" * HUGE, "x-purpose": "relationship.management",
            "x-guard-proxy-secret": keys.proxy_secret})
    assert response.status_code == 401
    assert len(response.content) < 2048
    row = _row(env, response.json()["decision_id"])
    assert row["caller"] == ""


async def test_an_oversized_method_is_refused_and_stored_cut(
    client: httpx.AsyncClient, env: dict[str, Any],
) -> None:
    response = await client.request("X" * 5000, "/customers/c-0001")
    assert response.status_code == 403
    row = _row(env, response.json()["decision_id"])
    assert row["reason"] == "malformed_request"
    assert len(row["http_method"]) == MAX_METHOD


# --- item 23: an unauthenticated attempt on a person's data is in their report ---

async def test_an_unauthenticated_attempt_carries_the_subject_pseudonym(
    client: httpx.AsyncClient, env: dict[str, Any],
) -> None:
    response = await client.get("/customers/c-0401/payment",
                                headers={"x-purpose": "relationship.management"})
    assert response.status_code == 401
    pseudonym = pseudonymise(env["hmac"], "c-0401")
    row = _row(env, response.json()["decision_id"])
    assert row["subject"] == pseudonym
    store = open_store(env["settings"].audit.store, create=False)
    try:
        report = subject_report(store, pseudonym)
        rows = query_events(store, EventFilter(subject=pseudonym, allowed=False), limit=None)
    finally:
        store.close()
    assert report.denied_attempts == 1
    assert [r.event.reason for r in rows] == ["unauthenticated"]
    assert rows[0].event.categories == ("financial",)


# --- item 10: no log line carries a raw path or subject id ---

async def test_a_failing_guard_logs_the_route_template_not_the_subject(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Authenticator):
        def authenticate(self, headers: Any, peer: str | None) -> Any:
            raise RuntimeError("identity provider exploded")

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse("data")

    app = Starlette(routes=[Route("/customers/{customer_id}", handler)])
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable.from_csv(ROUTES_CSV),
                       authenticator=Broken([], audience="a", issuer="i"))
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        response = await c.get("/customers/c-0042", headers={"x-purpose": "p" * 10})
        unauthenticated = await c.get("/customers/c-0042/payment")
    assert response.status_code == 403
    assert unauthenticated.status_code == 403
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records
                     if r.name.startswith("guard"))
    assert "the guard failed on GET /customers/{customer_id}" in text
    assert "the guard failed on GET <undeclared>" in text
    assert "c-0042" not in text


async def test_an_unauthenticated_request_logs_no_subject(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await client.get("/customers/c-0043", headers={
        "authorization": "Bearer not.a.token", "x-purpose": "relationship.management"})
    assert response.status_code == 401
    ours = [r for r in caplog.records if r.name.startswith("guard")]
    assert ours
    assert all("c-0043" not in r.getMessage() for r in ours)


# --- item 16: a response that dies mid-body is recorded as aborted ---

def _stream_app(env: dict[str, Any], *, fail: bool) -> Starlette:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first "
        if fail:
            raise RuntimeError("the data source went away")
        yield b"last"

    @guarded(categories=["contact"], subject="customer_id")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    app = Starlette(routes=[Route("/customers/{customer_id}/stream", stream),
                            Route("/customers/{customer_id}/half", guarded(
                                categories=["contact"], subject="customer_id")(_Half(half)))])
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()))
    return app


class _Half:
    """An ASGI endpoint that starts a body and returns without finishing it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def _outcome(env: dict[str, Any], path: str, keys: Keys,
                   *, fail: bool) -> tuple[list[Any], dict[str, Any], list[dict[str, Any]]]:
    app = _stream_app(env, fail=fail)
    sent: list[Any] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("svc", 80),
             "headers": [(b"authorization", f"Bearer {keys.mint('rsa', sub='svc:crm')}".encode()),
                         (b"x-purpose", b"relationship.management")]}

    inbox = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    with contextlib.suppress(RuntimeError):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    decision_id = dict(start["headers"])[b"x-guard-decision-id"].decode()
    env["guard"].trail.flush()  # an aborted outcome is queued for the next commit
    decision = audit_rows(env["db"], "event_id = ?", (decision_id,))
    assert len(decision) == 1
    outcomes = audit_rows(env["db"], "kind = 'outcome' AND decision_ref = ?", (decision_id,))
    return sent, decision[0], outcomes


@pytest.mark.parametrize(("path", "fail"), [("/customers/c-0005/stream", True),
                                            ("/customers/c-0005/half", False)])
async def test_a_stream_that_dies_mid_body_is_recorded_as_aborted(
    env: dict[str, Any], keys: Keys, path: str, fail: bool,
) -> None:
    sent, decision, outcomes = await _outcome(env, path, keys, fail=fail)
    assert sent[0]["status"] == 200
    assert decision["http_status"] == 200  # durable before the start went out
    assert [(o["http_status"], o["detail"]) for o in outcomes] == [(200, "aborted")]


async def test_a_stream_that_finishes_is_not_aborted(env: dict[str, Any], keys: Keys) -> None:
    sent, decision, outcomes = await _outcome(env, "/customers/c-0005/stream", keys, fail=False)
    assert sent[-1].get("more_body", False) is False
    assert decision["http_status"] == 200
    assert outcomes == []  # a read that finished is one event
