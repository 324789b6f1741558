"""Review of the newest fast paths: the route the guard judges stays the app router's answer.

Any answer the middleware remembers for a path must be the app's own answer
for as long as it is given: when the app's routes change at run time (the
router's ``routes`` list replaced, or changed in place), the next request is
judged as the app now dispatches it. A stale answer would judge a guarded
endpoint as the public one it replaced: the handler runs, nothing is decided
and nothing is audited.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route
from tokenkit import Keys, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware, RouteTable, guarded, public

READ = {"categories": ["contact"], "subject": "customer_id"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("review2-router")
    config = guard_settings(base, keys)
    guard = Guard.from_settings(config)
    yield {"guard": guard, "settings": config}
    guard.close()


def _guarded_app(env: dict[str, Any], routes: list[BaseRoute]) -> Starlette:
    app = Starlette(routes=routes)
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()), public_paths=())
    return app


async def _get(app: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as client:
        return await client.get(path)


def _endpoints(ran: list[str]) -> tuple[Any, Any]:
    @public()
    async def catalogue(request: Request) -> PlainTextResponse:
        ran.append("catalogue")
        return PlainTextResponse("catalogue")

    @guarded(**READ)
    async def customer(request: Request) -> PlainTextResponse:
        ran.append("customer")
        return PlainTextResponse("the customer's phone number")

    return catalogue, customer


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["replace the list", "change it in place"])
async def test_a_route_replaced_at_run_time_is_judged_as_the_app_now_dispatches(
    env: dict[str, Any], change: str
) -> None:
    ran: list[str] = []
    catalogue, customer = _endpoints(ran)
    app = _guarded_app(env, [Route("/customers/{customer_id}", catalogue)])
    for _ in range(3):  # answered (and, for a cache, remembered) as the public route
        assert (await _get(app, "/customers/c-0001")).status_code == 200
    assert ran == ["catalogue"] * 3
    guarded_routes: list[BaseRoute] = [Route("/customers/{customer_id}", customer)]
    if change == "replace the list":
        app.router.routes = guarded_routes
    else:
        app.router.routes[:] = guarded_routes
    answer = await _get(app, "/customers/c-0001")  # no credentials: the guarded route refuses
    assert answer.status_code == 401, answer.text
    assert ran == ["catalogue"] * 3  # the guarded handler never ran


_PATHS = ["/a/1", "/a/me", "/b/1", "/a/1/x", "/b"]
_TEMPLATES = ["/a/{customer_id}", "/a/me", "/b/{customer_id}", "/a/{customer_id}/x",
              "/{customer_id}", "/a/{customer_id:int}"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(steps=[("get", "/a/1", "GET"), ("replace", [], 0), ("get", "/a/1", "GET")])
@example(steps=[("get", "/a/1", "GET"), ("replace", [("/a/{customer_id}", False)], 0),
                ("get", "/a/1", "GET")])
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("get"), st.sampled_from(_PATHS), st.sampled_from(["GET", "POST"])),
    st.tuples(st.sampled_from(["replace", "in place", "append", "insert", "pop"]),
              st.lists(st.tuples(st.sampled_from(_TEMPLATES), st.booleans()), max_size=4),
              st.integers(0, 3)),
), min_size=1, max_size=14))
def test_the_endpoint_judged_follows_every_change_of_the_routes(
    env: dict[str, Any], steps: list[tuple[Any, ...]]
) -> None:
    """Requests interleaved with changes to the routes: judged always as Starlette dispatches."""
    names = itertools.count()

    def endpoint(declared: bool, template: str) -> Callable[..., Any]:
        name = f"e{next(names)}"

        async def handler(request: Request) -> PlainTextResponse:
            return PlainTextResponse(name)

        handler.__name__ = name
        if declared:
            return public()(handler)
        subject = "customer_id" if "{customer_id" in template else None
        return guarded(categories=["contact"], subject=subject)(handler)

    def routes(spec: list[tuple[str, bool]]) -> list[BaseRoute]:
        return [Route(t, endpoint(p, t), methods=["GET"]) for t, p in spec]

    app = _guarded_app(env, routes([("/a/{customer_id}", True), ("/b/{customer_id}", False)]))
    plain = Starlette(routes=[])

    async def run() -> None:
        for step in steps:
            kind = step[0]
            if kind == "get":
                _, path, method = step
                plain.router.routes = list(app.router.routes)
                scope = _scope(method, path)
                await _call(plain, scope)
                dispatched = scope.get("endpoint")
                judged_scope = _scope(method, path)
                await _call(app, judged_scope)
                outcome = judged_scope["state"]["guard"]
                assert outcome.endpoint is dispatched, (step, outcome)
                continue
            _, spec, at = step
            new = routes(spec)
            current = app.router.routes
            if kind == "replace":
                app.router.routes = new
            elif kind == "in place":
                current[:] = new
            elif kind == "append":
                current.extend(new)
            elif kind == "insert":
                for route in reversed(new):
                    current.insert(min(at, len(current)), route)
            elif current:
                current.pop(min(at, len(current) - 1))

    asyncio.run(run())


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": [(b"host", b"svc")],
            "client": ("127.0.0.1", 5000), "server": ("svc", 80)}


async def _call(app: Any, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await app(scope, receive, send)
