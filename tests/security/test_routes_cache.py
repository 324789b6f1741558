"""The remembered route answers: always the app router's own answer, bounded, and current.

The guard remembers the endpoint a (type, method, root_path, path) resolves to
(``middleware._router.AppRoutes``). These tests hold it to the app's own router:
for random routes (every convertor, trailing slashes, mounts, WebSocket routes,
hosts, a route class of the app's own) and random requests (dot segments,
slashes that were encoded, empty and doubled segments, root paths), with the
app's routes changed between requests, the answer remembered is the answer
found afresh and the endpoint the app dispatches to; an attacker's flood of
distinct paths cannot grow it past its bound.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import tracemalloc
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from routekit import change_routes, dispatched
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router, WebSocketRoute

from examples.customers import create_app
from guard.config import AuditSettings, IdentitySettings, Settings
from middleware import guarded
from middleware._router import ANSWERS, CACHED_PATH, AppRoutes, Resolved, find_router
from middleware.routes import RouteTable

_LITERALS = ["a", "me", "1", "1.5", "x"]
_UUID = "0b3b6f24-5f5a-4d0e-8e53-4b1c2f0b9a10"
_VALUES = {"str": ["a", "me", "x", "1"], "int": ["1", "007"], "float": ["1.5", "1"],
           "uuid": [_UUID], "path": ["x", "x/y", "", "me/1"]}
# What a server puts in ``path``: decoded, so an encoded slash is a slash; never normalised.
_SEGMENTS = [*_LITERALS, "", ".", "..", "a/b", "%2F", _UUID, "007"]


class _Loose(Route):
    """A route class with its own ``matches`` (it reads the query string, which no key holds)."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        if b"loose" in scope.get("query_string", b"") and scope["type"] == "http":
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}}
        return Match.NONE, {}


def _endpoint(names: itertools.count[int], declared: bool) -> Any:
    name = f"e{next(names)}"

    async def handler(request: Request) -> PlainTextResponse:
        return PlainTextResponse(name)

    handler.__name__ = name
    if declared:
        return guarded(categories=["contact"], subject=None)(handler)
    return handler


@st.composite
def _apps(draw: st.DrawFn) -> tuple[Starlette, list[str], Any]:
    """A Starlette app with random routes, sample paths that reach them, and an endpoint maker."""
    names = itertools.count()

    def template() -> tuple[str, str]:
        segs, filled = [], []
        for i in range(draw(st.integers(1, 3))):
            kinds = ["lit", "lit", "str", "int", "float", "uuid"] + (["path"] if i else [])
            kind = draw(st.sampled_from(kinds))
            if kind == "lit":
                segs.append(draw(st.sampled_from(_LITERALS)))
                filled.append(segs[-1])
            else:
                name = f"p{next(names)}"
                segs.append(f"{{{name}}}" if kind == "str" else f"{{{name}:{kind}}}")
                filled.append(draw(st.sampled_from(_VALUES[kind])))
        slash = draw(st.sampled_from(["", "", "/"]))
        return "/" + "/".join(segs) + slash, "/" + "/".join(filled) + slash

    samples: list[str] = []
    mixed = draw(st.booleans())  # else only routes matched by path (the answers remembered)

    def routes(depth: int, above: str) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        kinds = ["route"] * 5 + ["ws"] + (["mount", "host", "loose"] if depth == 0 and mixed
                                            else [])
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(kinds))
            if kind in ("route", "loose"):
                path, sample = template()
                methods = sorted(draw(st.sets(st.sampled_from(["GET", "POST"]), min_size=1)))
                cls = Route if kind == "route" else _Loose
                out.append(cls(path, _endpoint(names, draw(st.booleans())), methods=methods))
                samples.append(above + sample)
            elif kind == "ws":
                path, sample = template()

                async def socket(websocket: Any) -> None:
                    await websocket.close()

                out.append(WebSocketRoute(path, socket))
                samples.append(above + sample)
            elif kind == "mount":
                prefix = "/" + draw(st.sampled_from(_LITERALS))
                out.append(Mount(prefix, routes=routes(depth + 1, above + prefix)))
            else:
                out.append(Host("api.example", app=Router(routes=routes(depth + 1, above))))
        return out

    app = Starlette(routes=routes(0, ""))
    app.router.redirect_slashes = draw(st.booleans())
    return app, samples, lambda: _endpoint(names, draw(st.booleans()))


def _scope(kind: str, method: str, path: str, root: str, query: bytes) -> dict[str, Any]:
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": root + path,
            "raw_path": (root + path).replace("%2F", "%252F").encode(), "root_path": root,
            "query_string": query, "headers": [(b"host", b"svc")],
            "client": ("127.0.0.1", 5000), "server": ("svc", 80)}


def _same(a: Resolved, b: Resolved) -> bool:
    return a.endpoint is b.endpoint and a.rule == b.rule and a.subject == b.subject


_request = st.tuples(
    st.sampled_from(["http", "http", "http", "websocket"]),
    st.sampled_from(["GET", "GET", "POST", "HEAD", "PUT"]),
    st.booleans(),  # a sample path, or random segments
    st.lists(st.sampled_from(_SEGMENTS), min_size=0, max_size=4),
    st.sampled_from(["", "", "/", "/x", "//", "/.", "/.."]),  # what follows a sample path
    st.sampled_from(["", "", "/root"]),
    st.sampled_from([b"", b"loose=1"]),
)


_TEMPLATES = ["/{anything}", "/{anything:path}", "/a", "/me/{x}", "/{p:int}", "/a/"]
"""What a route added at run time matches."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=_apps(), data=st.data())
def test_the_remembered_answer_is_the_app_routers_own(
    generated: tuple[Starlette, list[str], Any], data: st.DataObject,
) -> None:
    app, samples, new_endpoint = generated
    remembering = AppRoutes(find_router(app), RouteTable(()), ())
    requests = []
    for _ in range(data.draw(st.integers(1, 12))):
        kind, method, use_sample, segments, tail, root, query = data.draw(_request)
        if use_sample and samples:
            path = data.draw(st.sampled_from(samples)) + tail
        else:
            path = "/" + "/".join(segments)
        requests.append((kind, method, path or "/", root, query))
    changes = [data.draw(st.integers(0, 5)) == 0 for _ in requests + requests]

    async def run() -> None:
        for (kind, method, path, root, query), change in zip(requests + requests, changes,
                                                              strict=True):
            if change:  # the app's routes change at run time
                template = data.draw(st.sampled_from(_TEMPLATES))
                change_routes(app, data, Route(template, new_endpoint(), methods=["GET", "POST"]))
                event("routes changed")
            scope = _scope(kind, method, path, root, query)
            before = dict(scope)
            got = remembering.resolve(scope)  # each request is asked twice: then remembered
            assert scope == before  # the request's scope is left as it was
            fresh = AppRoutes(find_router(app), RouteTable(()), ())._resolve(dict(scope), None)
            assert _same(got, fresh), (kind, method, path, root, query, got, fresh)
            endpoint = await dispatched(app, dict(scope))
            assert got.endpoint is endpoint, (kind, method, path, root, query, got, endpoint)
            event("remembered" if remembering._answers else "not remembered")

    asyncio.run(run())


def _example_routes(tmp_path: Path) -> tuple[FastAPI, AppRoutes]:
    settings = Settings(
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "k", signing_key=tmp_path / "s", writer_id="t"),
        identity=IdentitySettings(dev_key=tmp_path / "dev.key"))
    app = create_app(settings, enforce=False)
    router = find_router(app)
    assert router is not None
    return app, AppRoutes(router, RouteTable(()), ())


def _get(path: str) -> dict[str, Any]:
    return _scope("http", "GET", path, "", b"")


def test_an_answer_is_remembered_and_follows_a_change_of_the_routes(tmp_path: Path) -> None:
    app, routes = _example_routes(tmp_path)
    first = routes.resolve(_get("/customers/c-0001"))
    assert first.rule is not None
    assert first.rule.template == "/customers/{customer_id}"
    assert first.subject == "c-0001"
    assert routes.resolve(_get("/customers/c-0001")) is first  # remembered
    assert routes.resolve(_get("/customers/c-0002")).subject == "c-0002"

    @guarded(categories=["identity", "contact", "financial"], subject="who")
    async def takeover(who: str) -> dict[str, str]:
        return {}

    app.router.routes.insert(0, app.router.routes[0].__class__(
        "/customers/{who}", takeover, methods=["GET"]))
    now = routes.resolve(_get("/customers/c-0001"))
    assert now.endpoint is takeover  # the app calls the new route: so does the guard
    assert now.rule is not None
    assert now.rule.categories == ("identity", "contact", "financial")
    app.router.routes = [r for r in app.router.routes if getattr(r, "endpoint", None)
                         is not takeover]
    assert routes.resolve(_get("/customers/c-0001")).endpoint is first.endpoint


def test_a_scope_with_more_than_the_key_holds_is_not_answered_from_memory(
    tmp_path: Path,
) -> None:
    _app, routes = _example_routes(tmp_path)
    plain = routes.resolve(_get("/customers/c-0001"))
    scope = {**_get("/customers/c-0001"), "path_params": {"customer_id": "c-9999"}}
    with_params = routes.resolve(scope)
    assert with_params is not plain
    assert with_params.subject == "c-0001"  # the path's own parameter wins, as in Starlette
    long = "/customers/" + "c" * CACHED_PATH
    assert routes.resolve(_get(long)).subject == "c" * CACHED_PATH
    assert routes.resolve(_get(long)) is not routes.resolve(_get(long))  # not remembered


def test_a_flood_of_distinct_paths_cannot_grow_the_memory_past_its_bound(
    tmp_path: Path,
) -> None:
    _app, routes = _example_routes(tmp_path)
    filler = "x" * (CACHED_PATH - len("/customers/") - 8)

    def flood(count: int) -> tuple[int, int]:
        """The flood's peak, and what it leaves held once garbage is collected."""
        gc.collect()
        tracemalloc.start()
        try:
            for n in range(count):
                routes.resolve(_get(f"/customers/{n:08d}{filler}"))
            peak = tracemalloc.get_traced_memory()[1]
            gc.collect()
            return peak, tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    flood(ANSWERS)  # full once
    peak_one, _ = flood(3 * ANSWERS)
    peak_three, held = flood(9 * ANSWERS)
    assert len(routes._answers) <= ANSWERS
    assert peak_three < peak_one * 1.5, (peak_one, peak_three)  # not growing with the flood
    # What a full memory holds: its paths, subjects and answers. (The peak also counts
    # garbage the collector has not reached yet, which varies from run to run.)
    assert held < ANSWERS * 4 * CACHED_PATH, held
