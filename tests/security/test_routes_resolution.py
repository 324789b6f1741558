"""The middleware judges the endpoint the app will call: resolved through the app's own router."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Host, Mount, Route, Router
from tokenkit import Keys, audit_rows, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware, RouteTable, guarded, public

FINANCIAL = ("identity", "contact", "financial")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("resolution")
    config = guard_settings(base, keys)
    guard = Guard.from_settings(config)
    yield {"guard": guard, "settings": config, "db": base / "audit.db"}
    guard.close()


def _accounts_app(env: dict[str, Any], ran: list[str]) -> FastAPI:
    """The template registered before the literals: Starlette calls ``account`` for both."""
    app = FastAPI()

    @app.get("/accounts/{account_id}")
    @guarded(categories=list(FINANCIAL), subject="account_id")
    async def account(account_id: str) -> dict[str, str]:
        ran.append("account")
        return {"iban": "GB00 0000"}

    @app.get("/accounts/me")
    @public()
    async def me() -> dict[str, str]:
        ran.append("me")
        return {}

    @app.get("/accounts/summary")
    @guarded(categories=["aggregated"])
    async def summary() -> dict[str, str]:
        ran.append("summary")
        return {}

    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()))
    return app


async def _get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://svc") as client:
        return await client.get(path, headers=headers or {})


@pytest.mark.anyio
async def test_a_public_literal_behind_a_guarded_template_is_judged_as_the_template(
    env: dict[str, Any],
) -> None:
    ran: list[str] = []
    response = await _get(_accounts_app(env, ran), "/accounts/me")
    assert response.status_code == 401
    assert ran == []  # the financial handler did not run
    row = audit_rows(env["db"], "event_id = ?", (response.json()["decision_id"],))[0]
    assert (row["http_route"], row["categories"]) == ("/accounts/{account_id}", FINANCIAL)


@pytest.mark.anyio
async def test_an_aggregated_literal_behind_a_template_is_audited_as_what_runs(
    env: dict[str, Any], keys: Keys,
) -> None:
    ran: list[str] = []
    headers = {"authorization": f"Bearer {keys.mint('rsa', sub='svc:analytics')}",
               "x-purpose": "analytics.improvement"}
    response = await _get(_accounts_app(env, ran), "/accounts/summary", headers)
    assert response.status_code == 403
    assert ran == []
    row = audit_rows(env["db"], "event_id = ?", (response.json()["decision_id"],))[0]
    assert row["categories"] == FINANCIAL
    assert row["http_route"] == "/accounts/{account_id}"


@pytest.mark.anyio
async def test_fastapi_included_routers_and_mounts_resolve_as_dispatched(
    env: dict[str, Any],
) -> None:
    ran: list[str] = []
    inner = APIRouter(prefix="/v1")

    @inner.get("/{item}")
    @guarded(categories=["contact"], subject="item")
    async def item(item: str) -> dict[str, str]:
        ran.append("item")
        return {}

    @inner.get("/open")
    @public()
    async def shadowed() -> dict[str, str]:
        ran.append("shadowed")
        return {}

    @public()
    async def status(request: Request) -> PlainTextResponse:
        ran.append("status")
        return PlainTextResponse("ok")

    app = FastAPI()
    app.include_router(inner, prefix="/api")
    app.mount("/ops", Starlette(routes=[Route("/status", status)]))
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()))
    refused = await _get(app, "/api/v1/open")
    assert refused.status_code == 401
    row = audit_rows(env["db"], "event_id = ?", (refused.json()["decision_id"],))[0]
    assert row["http_route"] == "/api/v1/{item}"
    assert (await _get(app, "/ops/status")).status_code == 200
    undeclared = await _get(app, "/ops/other")
    assert undeclared.status_code == 401
    assert ran == ["status"]


@pytest.mark.anyio
async def test_routes_csv_rows_declare_the_endpoint_with_their_method_and_template(
    env: dict[str, Any], tmp_path: Path,
) -> None:
    ran: list[str] = []

    async def account(request: Request) -> PlainTextResponse:
        ran.append("account")
        return PlainTextResponse("")

    async def me(request: Request) -> PlainTextResponse:
        ran.append("me")
        return PlainTextResponse("")

    csv = tmp_path / "routes.csv"
    # File order says the literal first; the app says the template first: the app wins.
    csv.write_text("GET, /accounts/me, public\n"
                   "GET, /accounts/{account_id}, identity contact financial, read, account_id\n")
    app = Starlette(routes=[Route("/accounts/{account_id}", account), Route("/accounts/me", me)])
    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=csv)
    response = await _get(app, "/accounts/me")
    assert response.status_code == 401
    assert ran == []


# --- the property: for any routes and any request, judged endpoint == dispatched endpoint ---

_LITERALS = ["a", "me", "1", "1.5"]
_SEGMENTS = [*_LITERALS, "x"]


class _Opaque:
    """A mounted ASGI app the router cannot see into."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse(self.name)(scope, receive, send)


_VALUES = {"str": _SEGMENTS, "int": ["1", "007"], "float": ["1.5", "1"],
           "path": ["x", "x/y", "", "me/1"]}


@st.composite
def _route_sets(draw: st.DrawFn) -> tuple[list[BaseRoute], list[tuple[str, str]]]:
    """Routes (literal and parameterised paths, convertors, mounts, sub-apps, hosts, methods,
    in any order) and sample requests (host, path) that reach them."""
    names = itertools.count()
    samples: list[tuple[str, str]] = []

    def template(*, last_path: bool) -> tuple[str, str]:
        segs, filled = [], []
        count = draw(st.integers(1, 2))
        for i in range(count):
            kinds = ["lit", "lit", "str", "int", "float"]
            if last_path and i == count - 1:
                kinds.append("path")
            kind = draw(st.sampled_from(kinds))
            if kind == "lit":
                segs.append(draw(st.sampled_from(_LITERALS)))
                filled.append(segs[-1])
            else:
                segs.append(f"{{p{next(names)}" + ("" if kind == "str" else f":{kind}") + "}")
                filled.append(draw(st.sampled_from(_VALUES[kind])))
        return "/" + "/".join(segs), "/" + "/".join(filled)

    def prefix() -> tuple[str, str]:
        choice = draw(st.sampled_from(["", "/a", "/me", "param"]))
        if choice == "param":
            return f"/{{m{next(names)}}}", "/" + draw(st.sampled_from(_SEGMENTS))
        return choice, choice

    def endpoint() -> Any:
        name = f"e{next(names)}"

        async def handler(request: Request) -> PlainTextResponse:
            return PlainTextResponse(name)

        handler.__name__ = name
        return public()(handler) if draw(st.booleans()) else handler

    def routes(depth: int, host: str, above: str) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        kinds = ["route"] * 4 + (["mount", "sub", "host", "app"] if depth == 0 else [])
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(kinds))
            if kind == "route":
                methods = draw(st.sets(st.sampled_from(["GET", "POST", "PUT"]), min_size=1))
                path, sample = template(last_path=True)
                out.append(Route(path, endpoint(), methods=sorted(methods)))
                samples.append((host, above + sample))
            elif kind in ("mount", "sub"):
                path, sample = prefix()
                inner = routes(depth + 1, host, above + sample)
                out.append(Mount(path, routes=inner) if kind == "mount"
                           else Mount(path, app=Starlette(routes=inner)))
            elif kind == "host":
                out.append(Host("api.example", app=Router(routes=routes(depth + 1,
                                                                         "api.example", above))))
            else:
                path, sample = prefix()
                opaque = _Opaque(f"o{next(names)}")
                out.append(Mount(path or "/o", app=public()(opaque)
                                 if draw(st.booleans()) else opaque))
                samples.append((host, above + (sample or "/o") + "/x"))
        return out

    return routes(0, "svc", ""), samples


_request = st.tuples(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    st.booleans(),  # a sample path, or random segments
    st.lists(st.sampled_from(_SEGMENTS), min_size=0, max_size=4),
    st.sampled_from(["", "/", "/x"]),  # what follows a sample path
    st.sampled_from(["svc", "api.example"]),
    st.sampled_from(["", "/root"]),
)


def _scope(method: str, path: str, host: str, root: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": root + path,
            "raw_path": (root + path).encode(), "root_path": root, "query_string": b"",
            "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 5000),
            "server": ("svc", 80)}


async def _call(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(generated=_route_sets(), data=st.data())
def test_the_endpoint_judged_is_the_endpoint_starlette_dispatches_to(
    env: dict[str, Any], generated: tuple[list[BaseRoute], list[tuple[str, str]]],
    data: st.DataObject,
) -> None:
    routes, samples = generated
    plain = Starlette(routes=routes)
    guarded_app = Starlette(routes=routes)
    guarded_app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                               routes=RouteTable(()), public_paths=())
    leaves: dict[int, object] = {}  # the endpoints and opaque apps, by identity
    for route in _all_routes(routes):
        if isinstance(route, Route):
            leaves[id(route.endpoint)] = route.endpoint
        elif isinstance(route, Mount) and isinstance(route.app, _Opaque):
            leaves[id(route.app)] = route.app
    requests = []
    for _ in range(data.draw(st.integers(1, 8))):
        method, use_sample, segments, tail, host, root = data.draw(_request)
        if use_sample and samples:
            sample_host, path = data.draw(st.sampled_from(samples))
            host = data.draw(st.sampled_from([sample_host, host]))
            path = (path + tail).replace("//", "/") or "/"
        else:
            path = "/" + "/".join(segments)
        requests.append((method, path, host, root))

    async def run() -> None:
        for method, path, host, root in requests:
            scope = _scope(method, root + path, host, root)
            await _call(plain, scope)
            dispatched = scope.get("endpoint")
            dispatched = dispatched if id(dispatched) in leaves else None
            judged_scope = _scope(method, root + path, host, root)
            before = dict(judged_scope)
            sent = await _call(guarded_app, judged_scope)
            outcome = judged_scope["state"]["guard"]
            assert outcome.endpoint is dispatched, (method, path, host, root, outcome)
            event("dispatched" if dispatched is not None else "nowhere")
            event("public" if outcome.decision is None else "refused")
            if outcome.decision is None:  # public: the app ran, and called what was judged
                assert judged_scope.get("endpoint") is dispatched
            else:
                assert sent[0]["status"] in (401, 403)
                # Judging left the request's own scope as it was.
                assert {k: judged_scope[k] for k in before} == before

    asyncio.run(run())


def _all_routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        yield route
        inner = getattr(route, "routes", None)
        if inner:
            yield from _all_routes(list(inner))
