"""Sixth review: a WebSocket handshake the guard judged is answered as an HTTP answer is.

A WebSocket handshake is judged as a ``GET`` of its route (a denial closes it,
code 1008, which the server answers 403). An app that refuses an allowed handshake
itself may answer it with an HTTP response (the ASGI WebSocket Denial Response
extension, Starlette's ``send_denial_response``, served by uvicorn): that answer
left as the app made it, ``Cache-Control: public`` and ``X-Accel-Expires`` on, and
without the decision's id, while every HTTP answer the middleware judged leaves
``private`` (fifth review). A shared cache in front (nginx's ``proxy_cache`` keys
on the URL, not on ``Upgrade``) could keep one caller's answer for a client with no
token. It now goes through the same ``private_answer`` with the decision's id.

uvicorn serves WebSockets only with the ``websockets`` or ``wsproto`` package, which
this project does not install; the ASGI messages are driven here as the server
sends and takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from tokenkit import audit_rows, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware
from middleware.routes import RouteTable

pytestmark = pytest.mark.anyio
SECRET = "feed of c-0004"


async def feed(websocket: WebSocket) -> None:
    """Refuse the handshake with an HTTP answer that asks shared caches to keep it."""
    await websocket.send_denial_response(PlainTextResponse(
        SECRET, status_code=200, headers={"cache-control": "public, max-age=600",
                                          "x-accel-expires": "600"}))


def make_app(settings: Any, guard: Guard, tmp_path: Path) -> Starlette:
    csv = tmp_path / "ws-routes.csv"
    csv.write_text("GET, /customers/{customer_id}/feed, contact, read, customer_id\n")
    app = Starlette(routes=[WebSocketRoute("/customers/{customer_id}/feed", feed)])
    app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                       routes=RouteTable.from_csv(csv))
    return app


async def handshake(app: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    """One WebSocket handshake, as uvicorn drives it (with the denial response extension)."""
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
             "path": "/customers/c-0004/feed", "raw_path": b"/customers/c-0004/feed",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("svc", 80), "subprotocols": [],
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
             "extensions": {"websocket.http.response": {}}}
    inbox = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_judged_handshake_answer_leaves_private_with_its_decision(
        tmp_path: Path, keys: Any) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    try:
        app = make_app(settings, guard, tmp_path)
        sent = await handshake(app, {"authorization": f"Bearer {keys.mint(sub='svc:crm')}",
                                     "x-purpose": "relationship.management"})
        assert [m["type"] for m in sent] == ["websocket.http.response.start",
                                             "websocket.http.response.body"]
        start = sent[0]
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        assert headers["cache-control"] == "private, max-age=600"
        assert "x-accel-expires" not in headers
        decision_id = headers.get("x-guard-decision-id")
        assert decision_id

        refused = await handshake(app, {})  # no token: closed, never the app's answer
        assert refused == [{"type": "websocket.close", "code": 1008, "reason": "forbidden"}]
    finally:
        guard.close()
    rows = audit_rows(tmp_path / "audit.db", "kind = 'decision' AND allowed = 1")
    assert [(r["event_id"], r["http_status"]) for r in rows] == [(decision_id, 200)]
