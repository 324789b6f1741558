"""GuardMiddleware through httpx.ASGITransport: every reason, bodies, audit rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from tokenkit import Keys, audit_rows, forge, guard_settings

from examples.customers import DEMOS, Demo, create_app, mint_tokens
from guard._guard import Guard
from guard.audit import (
    EventFilter,
    load_hmac_key,
    open_store,
    pseudonymise,
    query_events,
)
from guard.audit._jtrail import wait_indexed
from guard.config import AuditSettings
from middleware import GuardMiddleware, RouteTable
from middleware.problem import PROBLEM_MEDIA_TYPE

pytestmark = pytest.mark.anyio
ROUTES_CSV = Path(__file__).resolve().parents[2] / "policies" / "routes.csv"
PROBLEM_KEYS = {"type", "title", "status", "reason", "purpose", "categories", "decision_id"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("asgi")
    settings = guard_settings(base, keys, trusted_proxies=["10.0.0.0/8"],
                              proxy_secret_file=keys.proxy_file)
    guard = Guard.from_settings(settings)
    app = create_app(settings, guard=guard)
    yield {"app": app, "guard": guard, "settings": settings, "db": base / "audit.db",
           "tokens": mint_tokens(settings), "hmac": load_hmac_key(base / "subject-hmac.key")}
    guard.close()


@pytest.fixture
async def client(env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def _headers(demo: Demo, token: str | None) -> dict[str, str]:
    headers = {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    if demo.purpose:
        headers["x-purpose"] = demo.purpose
    if demo.body:
        headers["content-type"] = "application/json"
    return headers


def decision_row(db: Path, decision_id: str) -> dict[str, Any]:
    wait_indexed(AuditSettings(store=f"sqlite:///{db}"))  # the journal is indexed behind
    rows = audit_rows(db, "event_id = ?", (decision_id,))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("demo", DEMOS, ids=lambda d: d.reason + ":" + d.path)
async def test_every_demo_request(client: httpx.AsyncClient, env: dict[str, Any],
                                  demo: Demo) -> None:
    response = await client.request(demo.method, demo.path,
                                    headers=_headers(demo, env["tokens"].get(demo)),
                                    content=demo.body)
    assert response.status_code == demo.status, response.text
    if demo.reason == "public":
        assert "x-guard-decision-id" not in response.headers
        return
    env["guard"].trail.flush()  # a write's outcome is queued for the next commit
    if demo.reason == "allowed":
        decision_id = response.headers["x-guard-decision-id"]
        row = decision_row(env["db"], decision_id)
        assert row["allowed"] == 1
        outcomes = audit_rows(env["db"], "kind = 'outcome' AND decision_ref = ?", (decision_id,))
        if row["action"] == "read":  # one event: the decision with the status sent
            assert row["http_status"] == demo.status
            assert outcomes == []
        else:  # durable before the handler ran; the status follows as an outcome
            assert row["http_status"] is None
            assert [o["http_status"] for o in outcomes] == [demo.status]
    else:
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        body = response.json()
        assert set(body) == PROBLEM_KEYS
        assert body["status"] == demo.status
        assert body["reason"] == demo.reason
        assert body["type"].endswith(demo.reason)
        assert body["purpose"] == demo.purpose
        decision_id = body["decision_id"]
        assert decision_id
        row = decision_row(env["db"], decision_id)
        assert row["allowed"] == 0
        assert list(body["categories"]) == list(row["categories"])
        # Nothing of the policy beyond the reason code.
        text = response.text
        assert "rules.csv" not in text
        assert "lawful" not in text
        assert row["http_status"] == demo.status  # one event, with the status sent
        assert not audit_rows(env["db"], "kind = 'outcome' AND decision_ref = ?", (decision_id,))
    assert row["kind"] == "decision"
    assert row["reason"] == demo.reason
    assert row["caller"] == (demo.caller or "")
    assert row["purpose"] == (demo.purpose or "")
    assert row["http_method"] == demo.method
    if demo.reason == "route_not_declared":
        assert row["http_route"] == "<undeclared>"
    else:
        assert row["http_route"].startswith("/customers")
    if "{customer_id}" in row["http_route"] and demo.reason != "unauthenticated":
        assert row["subject"] == pseudonymise(env["hmac"], "c-0001")
        assert row["subject"] != "c-0001"


async def test_audit_query_layer_lists_denials(client: httpx.AsyncClient,
                                               env: dict[str, Any]) -> None:
    demo = next(d for d in DEMOS if d.reason == "category_not_in_purpose")
    response = await client.get(demo.path, headers=_headers(demo, env["tokens"][demo]))
    decision_id = response.json()["decision_id"]
    env["guard"].trail.flush()
    store = open_store(env["settings"].audit.store, create=False)
    try:
        rows = query_events(store, EventFilter(caller="svc:crm", reason=demo.reason), limit=None)
    finally:
        store.close()
    found = [r.event for r in rows if r.event.event_id == decision_id]
    assert found
    assert found[0].categories == ("financial",)
    assert found[0].policy_version


async def test_response_status_is_recorded(client: httpx.AsyncClient,
                                           env: dict[str, Any]) -> None:
    demo = DEMOS[0]
    response = await client.get("/customers/c-9999", headers=_headers(demo, env["tokens"][demo]))
    assert response.status_code == 404
    decision_id = response.headers["x-guard-decision-id"]
    env["guard"].trail.flush()
    row = decision_row(env["db"], decision_id)
    assert (row["allowed"], row["http_status"], row["http_route"]) == (
        1, 404, "/customers/{customer_id}")
    assert audit_rows(env["db"], "decision_ref = ?", (decision_id,)) == []


async def test_public_route_is_counted_not_audited(client: httpx.AsyncClient,
                                                   env: dict[str, Any]) -> None:
    env["guard"].trail.flush()
    before = len(audit_rows(env["db"]))
    for _ in range(3):
        assert (await client.get("/healthz")).status_code == 200
    env["guard"].trail.flush()
    assert len(audit_rows(env["db"])) == before
    middleware = _guard_middleware(env["app"])
    assert middleware.public_requests["/healthz"] >= 3


def _guard_middleware(app: Any) -> GuardMiddleware:
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, GuardMiddleware):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, GuardMiddleware)
    return layer


async def test_handler_does_not_run_when_denied(env: dict[str, Any], keys: Keys,
                                                tmp_path: Path) -> None:
    ran: list[str] = []

    async def handler(request: Request) -> PlainTextResponse:
        ran.append(request.path_params["customer_id"])
        return PlainTextResponse("data")

    app = Starlette(routes=[Route("/customers/{customer_id}", handler)])
    routes = RouteTable.from_csv(ROUTES_CSV)
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=routes)
    token = keys.mint("ed", sub="svc:crm")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        denied = await c.get("/customers/c-0002",
                             headers={"authorization": f"Bearer {token}",
                                      "x-purpose": "analytics.improvement"})
        allowed = await c.get("/customers/c-0003",
                              headers={"authorization": f"Bearer {token}",
                                       "x-purpose": "relationship.management"})
    assert denied.status_code == 403
    assert denied.json()["reason"] == "purpose_not_granted"
    assert allowed.status_code == 200
    assert ran == ["c-0003"]


def _attack_tokens(keys: Keys) -> dict[str, str]:
    from tokenkit import claims

    now = claims()["iat"]
    good = keys.mint("rsa")
    head, body, sig = good.split(".")
    return {
        "expired": keys.mint("rsa", exp=now - 120, nbf=now - 600),
        "not_yet_valid": keys.mint("rsa", nbf=now + 600),
        "wrong_audience": keys.mint("ec", aud="other"),
        "wrong_issuer": keys.mint("ed", iss="evil"),
        "tampered_signature": f"{head}.{body}.{sig[:-6]}AAAAAA",
        "alg_none": forge({"alg": "none"}, claims(), None),
        "hs256_with_rsa_public_key": forge({"alg": "HS256", "kid": "rsa-1"}, claims(),
                                           keys.rsa_public_pem()),
        "unknown_kid": forge({"alg": "RS256", "kid": "nope"}, claims(), b"x" * 32),
    }


@pytest.mark.parametrize("attack", ["expired", "not_yet_valid", "wrong_audience",
                                    "wrong_issuer", "tampered_signature", "alg_none",
                                    "hs256_with_rsa_public_key", "unknown_kid"])
async def test_token_attacks_get_401(client: httpx.AsyncClient, env: dict[str, Any],
                                     keys: Keys, attack: str) -> None:
    response = await client.get("/customers/c-0001", headers={
        "authorization": f"Bearer {_attack_tokens(keys)[attack]}",
        "x-purpose": "relationship.management"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["reason"] == "unauthenticated"
    row = decision_row(env["db"], body["decision_id"])
    assert (row["reason"], row["caller"], row["allowed"]) == ("unauthenticated", "", 0)


async def test_spoofed_proxy_header_from_untrusted_address(client: httpx.AsyncClient) -> None:
    response = await client.get("/customers/c-0001", headers={
        "x-caller": "svc:support", "x-purpose": "rights.request"})
    assert response.status_code == 401
    assert response.json()["reason"] == "unauthenticated"


async def test_proxy_header_from_trusted_address(env: dict[str, Any], keys: Keys) -> None:
    transport = httpx.ASGITransport(app=env["app"], client=("10.9.8.7", 4444))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        response = await c.get("/customers/c-0001", headers={
            "x-caller": "svc:support", "x-purpose": "rights.request",
            "x-guard-proxy-secret": keys.proxy_secret})
    assert response.status_code == 200
    row = decision_row(env["db"], response.headers["x-guard-decision-id"])
    assert row["caller"] == "svc:support"


async def test_audit_unavailable_denies_and_skips_handler(keys: Keys, tmp_path: Path) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    app = create_app(settings, guard=guard)
    guard.close()  # the writer is gone: nothing can be made durable any more
    token = mint_tokens(settings)[DEMOS[0]]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        response = await c.put("/customers/c-0001/contact", json={"phone": "0"},
                               headers={"authorization": f"Bearer {token}",
                                        "x-purpose": "relationship.management"})
    assert response.status_code == 403
    body = response.json()
    assert body["reason"] == "audit_unavailable"
    assert body["decision_id"] is None


def _ws_app(guard: Guard, settings: Any, lifespan_log: list[str]) -> Starlette:
    from contextlib import asynccontextmanager

    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        lifespan_log.append("startup")
        yield
        lifespan_log.append("shutdown")

    app = Starlette(routes=[WebSocketRoute("/customers/{customer_id}/feed", feed),
                            WebSocketRoute("/undeclared", feed), Route("/hello", hello)],
                    lifespan=lifespan)
    routes = RouteTable.from_csv(_csv(settings))
    app.add_middleware(GuardMiddleware, guard=guard, settings=settings, routes=routes)
    return app


def _csv(settings: Any) -> Path:
    path = Path(settings.audit.hmac_key).parent / "ws-routes.csv"
    path.write_text("GET, /customers/{customer_id}/feed, contact, read, customer_id\n"
                    "GET, /hello, public\n")
    return path


async def _drive(app: Any, scope: dict[str, Any], inbox: list[dict[str, Any]]) -> list[Any]:
    """Run one ASGI connection by hand; returns what the app sent."""
    sent: list[Any] = []
    messages = list(inbox)

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _ws_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": path,
            "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5000), "server": ("svc", 80), "subprotocols": []}


async def test_websocket_and_lifespan(env: dict[str, Any], keys: Keys) -> None:
    log: list[str] = []
    app = _ws_app(env["guard"], env["settings"], log)
    sent = await _drive(app, {"type": "lifespan", "asgi": {"version": "3.0"}},
                        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert log == ["startup", "shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]

    ok = {"authorization": f"Bearer {keys.mint('rsa', sub='svc:crm')}",
          "x-purpose": "relationship.management"}
    sent = await _drive(app, _ws_scope("/customers/c-0004/feed", ok),
                        [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send",
                                         "websocket.close"]
    for path, headers in [("/undeclared", ok), ("/customers/c-0004/feed", {}),
                          ("/customers/c-0004/feed",
                           {**ok, "x-purpose": "analytics.improvement"})]:
        sent = await _drive(app, _ws_scope(path, headers), [{"type": "websocket.connect"}])
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": "forbidden"}]

    env["guard"].trail.flush()
    rows = audit_rows(env["db"], "http_route = ? AND kind = 'decision'",
                      ("/customers/{customer_id}/feed",))
    assert sorted(r["reason"] for r in rows) == ["allowed", "purpose_not_granted",
                                                 "unauthenticated"]
    allowed = next(r for r in rows if r["allowed"])
    assert allowed["http_status"] == 101  # a read: recorded as the socket is accepted
    env["guard"].trail.flush()
    assert audit_rows(env["db"], "decision_ref = ?", (allowed["event_id"],)) == []


def test_problem_body_is_exactly_rfc9457_shaped(env: dict[str, Any]) -> None:
    from guard._types import Reason
    from middleware.problem import problem_body

    body = problem_body(403, Reason.CATEGORY_NOT_GRANTED, "p", ("contact",), "id-1")
    assert json.loads(json.dumps(body)) == {
        "type": "urn:purpose-guard:problem:category_not_granted",
        "title": "Data category not granted to this caller", "status": 403,
        "reason": "category_not_granted", "purpose": "p", "categories": ["contact"],
        "decision_id": "id-1"}


async def test_middleware_builds_and_closes_its_own_guard(keys: Keys, tmp_path: Path) -> None:
    from starlette.routing import Route as R

    async def hello(request: Request) -> JSONResponse:
        outcome = request.scope["state"]["guard"]
        return JSONResponse({"caller": outcome.caller.id, "purpose": outcome.decision.purpose})

    settings = guard_settings(tmp_path, keys)
    routes = tmp_path / "routes.csv"
    routes.write_text("# one route\nGET, /hello/{customer_id}, contact, read, customer_id\n")
    app = Starlette(routes=[R("/hello/{customer_id}", hello)])
    app.add_middleware(GuardMiddleware, settings=settings, routes=routes)
    headers = {"authorization": f"Bearer {keys.mint('ec', sub='svc:crm')}",
               "x-purpose": "relationship.management"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        ok = await c.get("/hello/c-0009", headers=headers)
        assert ok.status_code == 200
        assert ok.json() == {"caller": "svc:crm", "purpose": "relationship.management"}
        wait_indexed(settings.audit)
        assert len(audit_rows(tmp_path / "audit.db", "kind = 'decision'")) == 1
        # Shutting the app down closes the guard the middleware opened ...
        await _drive(app, {"type": "lifespan", "asgi": {"version": "3.0"}},
                     [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        # ... after which nothing can be recorded, so nothing is allowed.
        after = await c.get("/hello/c-0009", headers=headers)
    assert after.status_code == 403
    assert after.json()["reason"] == "audit_unavailable"


async def test_a_failing_guard_component_fails_closed(env: dict[str, Any]) -> None:
    from middleware import Authenticator

    class Broken(Authenticator):
        def authenticate(self, headers: Any, peer: str | None) -> Any:
            raise RuntimeError("identity provider exploded")

    ran: list[bool] = []

    async def handler(request: Request) -> PlainTextResponse:
        ran.append(True)
        return PlainTextResponse("data")

    app = Starlette(routes=[Route("/customers/{customer_id}", handler)])
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable.from_csv(ROUTES_CSV),
                       authenticator=Broken([], audience="a", issuer="i"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as c:
        response = await c.get("/customers/c-0001")
    assert response.status_code == 403
    assert response.json()["reason"] == "internal_error"
    assert ran == []
