"""A connection of a kind the guard cannot judge never reaches the app.

``GuardMiddleware`` judges ``http`` and ``websocket`` connections and passes
``lifespan`` through; any other scope type (the ASGI WebTransport draft's
``webtransport``, a server's own) went to the app unjudged and unaudited. An ASGI app
that is not Starlette's (routes.csv then declares its routes) may serve any kind it is
given. It is now refused (raised, as the ASGI spec asks of a type not understood), and
the app is never called. The ASGI messages are driven here as a server sends them: no
server installed here speaks such a kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tokenkit import guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware
from middleware.routes import RouteTable

pytestmark = pytest.mark.anyio


class AnyKindApp:
    """A plain ASGI app that serves every connection it gets (records each kind)."""

    def __init__(self) -> None:
        self.served: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.served.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"the record of c-0004"})


def _scope(kind: str) -> dict[str, Any]:
    return {"type": kind, "asgi": {"version": "3.0"}, "scheme": "https", "method": "GET",
            "http_version": "3", "path": "/customers/c-0004", "raw_path": b"/customers/c-0004",
            "root_path": "", "query_string": b"", "headers": [], "client": ("127.0.0.1", 5000),
            "server": ("svc", 443)}


async def _drive(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("kind", ["webtransport", "http3", "HTTP", "custom"])
async def test_a_connection_of_a_kind_the_guard_cannot_judge_never_reaches_the_app(
        tmp_path: Path, keys: Any, kind: str) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    csv = tmp_path / "routes.csv"
    csv.write_text("GET, /customers/{customer_id}, contact, read, customer_id\n")
    inner = AnyKindApp()
    app = GuardMiddleware(inner, guard=guard, settings=settings,
                          routes=RouteTable.from_csv(csv))
    try:
        with pytest.raises(ValueError, match="http and websocket"):
            await _drive(app, _scope(kind))
        assert inner.served == []
        refused = await _drive(app, _scope("http"))  # no token: judged and refused
        assert refused[0]["status"] == 401
        assert inner.served == []
    finally:
        guard.close()
