"""Helpers of the route-resolution tests: the endpoint an app's own router dispatches to, and
the app's routes changed at run time."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Router


async def dispatched(app: Starlette, scope: dict[str, Any]) -> object | None:
    """The endpoint the app's own router calls for ``scope`` (None: none, a 404 or redirect).

    The router writes its routing keys (``endpoint``, ``path_params``...) into ``scope``:
    pass a copy of a request's scope, and read those keys from it afterwards.
    """
    inbox = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return inbox.pop() if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        return None

    with contextlib.suppress(Exception):  # a WebSocket endpoint on a bare send: it was called
        await app.router(scope, receive, send)
    endpoint = scope.get("endpoint")
    # A mount's or host's router is where an unmatched path ended (a 404): no endpoint.
    return None if isinstance(endpoint, Router | Starlette) else endpoint


def change_routes(app: Starlette, data: st.DataObject, fresh: BaseRoute) -> None:
    """Insert or append ``fresh``, remove a route, replace one with ``fresh``, or give the
    router a new list with ``fresh`` first, as an app may at run time."""
    routes = app.router.routes
    how = data.draw(st.sampled_from(["insert", "append", "remove", "replace", "reassign"]))
    if how == "insert":
        routes.insert(0, fresh)
    elif how == "append":
        routes.append(fresh)
    elif how == "remove" and routes:
        routes.pop(data.draw(st.integers(0, len(routes) - 1)))
    elif how == "replace" and routes:
        routes[data.draw(st.integers(0, len(routes) - 1))] = fresh
    else:
        app.router.routes = [fresh, *routes]
