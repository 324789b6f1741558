"""A path with a trailing newline is judged as the route the app runs.

A client's ``/a%0A`` reaches the app as ``/a\\n`` (servers percent-decode ``path``), and
Starlette's compiled ``^/a$`` matches it: ``$`` also matches before a last newline.
The router index filed such a path under its own segments (``a\\n``), which ``/a``
does not name, so the guard judged the next route that matched (a public ``/{x}``)
while the app ran ``/a``'s guarded handler.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware, RouteTable, guarded, public
from middleware._router import AppRoutes, find_router


async def _secret(request: Request) -> PlainTextResponse:
    return PlainTextResponse("secret")


async def _open(request: Request) -> PlainTextResponse:
    return PlainTextResponse("open")


def _scope(path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.replace("\n", "%0A").encode(), "root_path": "",
            "query_string": b"", "headers": [(b"host", b"svc")],
            "client": ("127.0.0.1", 5000), "server": ("svc", 80)}


def test_a_path_with_a_trailing_newline_is_judged_as_the_route_the_app_runs(
    tmp_path: Path, keys: Keys,
) -> None:
    secret = guarded(categories=["contact"])(_secret)
    app = Starlette(routes=[Route("/a", secret), Route("/{x}", public()(_open))])
    config = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(config)
    app.add_middleware(GuardMiddleware, guard=guard, settings=config, routes=RouteTable(()),
                       public_paths=())
    router = find_router(app)
    assert router is not None
    judged = AppRoutes(router, RouteTable(()), ())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        for path in ("/b", "/a", "/a\n", "/c", "/a\n"):  # new paths, then one remembered
            runs = secret if path.startswith("/a") else _open
            assert judged.resolve(_scope(path)).endpoint is runs, path
            dispatched = _scope(path)
            await router(dispatched, receive, send)
            assert dispatched["endpoint"] is runs, path
            sent.clear()
            await app(_scope(path), receive, send)  # no token: the guarded route is refused
            assert sent[0]["status"] == (401 if runs is secret else 200), path

    try:
        asyncio.run(run())
    finally:
        guard.close()
