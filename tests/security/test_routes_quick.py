"""A path asked for the first time: the routes' own patterns matched, the app router's answer.

``AppRoutes.quick`` answers a path with no remembered answer by matching the
candidates' compiled patterns and methods itself (no copy of the scope, no
``matches`` call) when every route of the app's router is Starlette's or
FastAPI's own ``Route``, ``WebSocketRoute`` or ``Mount``, compiled as written, with
Starlette's convertors. These tests hold it, for random Starlette and FastAPI apps
(every convertor, trailing slashes, mounts, WebSocket routes, GET routes that take
HEAD and FastAPI's that do not, a route class with a ``matches`` of its own, routes
changed at run time) and random requests (percent signs and encoded slashes as a
server decodes them, dot, empty and doubled segments, a trailing newline, root paths,
every method), to the answer the routes' own ``matches`` give (``AppRoutes._resolve``)
and to the endpoint the app's router dispatches to; and to the subject the handler
receives (``str()`` of the converted parameter: ``007`` is ``7``).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from routekit import change_routes, dispatched
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute

from middleware import guarded
from middleware._router import Answer, AppRoutes, Resolved, find_router
from middleware.routes import RouteTable

_LITERALS = ["a", "me", "1", "1.5", "x", "a b", "%2F"]
_UUID = "0b3b6f24-5f5a-4d0e-8e53-4b1c2f0b9a10"
_VALUES = {"str": ["a", "me", "x", "1", "a%2Fb", "a b"], "int": ["1", "007"],
           "float": ["1.5", "1.50", "1"], "uuid": [_UUID, _UUID.replace("-", "").upper()],
           "path": ["x", "x/y", "", "me/1"]}
# What a server puts in ``path``: percent-decoded (an encoded slash is a slash, ``%252F`` is
# ``%2F``), never normalised.
_SEGMENTS = [*_LITERALS, "", ".", "..", "a/b", _UUID, "007", "1\n", "A", "%"]


class _Sniffing(APIRoute):
    """A FastAPI route class with a ``matches`` of its own (it reads a header no key holds)."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        if (b"x-sniff", b"1") in scope.get("headers", []):
            return Match.NONE, {}
        return super().matches(scope)


@st.composite
def _apps(draw: st.DrawFn) -> tuple[Starlette, list[str], Any]:
    """A Starlette or FastAPI app with random routes, paths that reach them, and a route maker."""
    names = itertools.count()
    fastapi = draw(st.booleans())

    def endpoint(params: list[str]) -> Any:
        name = f"e{next(names)}"

        async def handler(request: Request) -> PlainTextResponse:
            return PlainTextResponse(name)

        handler.__name__ = name
        if draw(st.integers(0, 3)) == 0:
            return handler  # undeclared
        subject = draw(st.sampled_from([None, *params]))
        return guarded(categories=["contact"], subject=subject)(handler)

    def template(*, last_path: bool = True) -> tuple[str, str, list[str]]:
        segs, filled, params = [], [], []
        count = draw(st.integers(1, 3))
        for i in range(count):
            kinds = ["lit", "lit", "str", "int", "float", "uuid"]
            if last_path and i:
                kinds.append("path")
            kind = draw(st.sampled_from(kinds))
            if kind == "lit":
                segs.append(draw(st.sampled_from(_LITERALS)))
                filled.append(segs[-1])
            else:
                name = f"p{next(names)}"
                params.append(name)
                segs.append(f"{{{name}}}" if kind == "str" else f"{{{name}:{kind}}}")
                filled.append(draw(st.sampled_from(_VALUES[kind])))
        slash = draw(st.sampled_from(["", "", "/"]))
        return "/" + "/".join(segs) + slash, "/" + "/".join(filled) + slash, params

    samples: list[str] = []

    def routes(depth: int, above: str) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        made: list[tuple[str, str, list[str]]] = []
        kinds = ["route"] * 5 + ["twin", "twin", "ws"] + (["mount", "own"] if depth == 0 else [])
        for _ in range(draw(st.integers(1, 7))):
            kind = draw(st.sampled_from(kinds))
            if kind == "mount":
                prefix = "/" + draw(st.sampled_from(_LITERALS[:5]))
                out.append(Mount(prefix, routes=routes(depth + 1, above + prefix)))
                continue
            if kind == "twin" and made:  # an earlier route's template again (other methods)
                path, sample, params = draw(st.sampled_from(made))
            else:
                path, sample, params = template()
                made.append((path, sample, params))
            samples.append(above + sample)
            methods = sorted(draw(st.sets(st.sampled_from(["GET", "POST", "PUT"]), min_size=1)))
            if kind == "ws":

                async def socket(websocket: Any) -> None:
                    await websocket.close()

                out.append(WebSocketRoute(path, socket))
            elif fastapi and depth == 0 and draw(st.booleans()):
                cls = _Sniffing if kind == "own" else APIRoute
                out.append(cls(path, endpoint(params), methods=methods))
            elif kind == "own":
                out.append(_Sniffing(path, endpoint(params), methods=methods))
            else:
                out.append(Route(path, endpoint(params), methods=methods))
        return out

    app: Starlette = FastAPI() if fastapi else Starlette()
    app.router.routes[:] = routes(0, "")
    app.router.redirect_slashes = draw(st.booleans())

    def new_route(data: st.DataObject) -> BaseRoute:
        nonlocal draw
        draw = data.draw  # drawn in the test, after the app was
        path, sample, params = template()
        samples.append(sample)
        cls = APIRoute if fastapi and draw(st.booleans()) else Route
        return cls(path, endpoint(params), methods=["GET", "POST"])

    return app, samples, new_route


def _scope(kind: str, method: str, path: str, root: str, sniff: bool) -> dict[str, Any]:
    headers = [(b"host", b"svc")] + ([(b"x-sniff", b"1")] if sniff else [])
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": root + path,
            "raw_path": (root + path).replace("%", "%25").encode(), "root_path": root,
            "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("svc", 80)}


def _handler_subject(scope: dict[str, Any], resolved: Resolved) -> str | None:
    """The subject as the handler receives it: ``str()`` of the converted path parameter."""
    rule = resolved.rule
    if rule is None or rule.subject is None:
        return None
    params = scope.get("path_params") or {}
    return str(params[rule.subject]) if rule.subject in params else None


_request = st.tuples(
    st.sampled_from(["http", "http", "http", "websocket"]),
    st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "OPTIONS"]),
    st.booleans(),  # a sample path, or random segments
    st.lists(st.sampled_from(_SEGMENTS), min_size=0, max_size=4),
    st.sampled_from(["", "", "/", "/x", "//", "/.", "\n"]),  # what follows a sample path
    st.sampled_from(["", "", "/root"]),
    st.integers(0, 5),  # 0: the request carries the header the route class of its own reads
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated=_apps(), data=st.data())
def test_a_new_path_gets_the_app_routers_own_answer(
    generated: tuple[Starlette, list[str], Any], data: st.DataObject,
) -> None:
    app, samples, new_route = generated
    router = find_router(app)
    assert router is not None
    routes = AppRoutes(router, RouteTable(()), ())
    requests = []
    for _ in range(data.draw(st.integers(1, 14))):
        kind, method, use_sample, segments, tail, root, sniff = data.draw(_request)
        if use_sample and samples:
            path = data.draw(st.sampled_from(samples)) + tail
        else:
            path = "/" + "/".join(segments)
        requests.append((kind, method, path, root, sniff == 0))
    changes = [data.draw(st.integers(0, 6)) == 0 for _ in requests]
    quick = routes.quick

    async def run() -> None:
        for (kind, method, path, root, sniff), change in zip(requests, changes, strict=True):
            if change:  # the app's routes change at run time
                change_routes(app, data, new_route(data))
                event("routes changed")
            scope = _scope(kind, method, path, root, sniff)
            before = dict(scope)
            key = (kind, method if kind == "http" else None, root, root + path)
            matched = quick(scope, key) if key not in routes._answers else None
            event("matched by the patterns" if matched is not None else "not matched so")
            got = routes.resolve(scope)
            assert scope == before  # the request's scope is left as it was
            if isinstance(matched, Answer):
                assert matched.resolved == got
            fresh = AppRoutes(router, RouteTable(()), ())._resolve(dict(scope), None)
            assert got.endpoint is fresh.endpoint, (kind, method, path, root, got, fresh)
            assert got.rule == fresh.rule, (kind, method, path, root, got, fresh)
            assert got.subject == fresh.subject, (kind, method, path, root, got, fresh)
            routed = dict(scope)
            assert got.endpoint is await dispatched(app, routed), (kind, method, path, root)
            if got.endpoint is not None:
                assert got.subject == _handler_subject(routed, got)

    asyncio.run(run())


async def _noop(request: Request) -> PlainTextResponse:
    return PlainTextResponse("")


def test_the_patterns_answer_only_for_routes_whose_matches_they_are() -> None:
    """A route class with a ``matches`` of its own (FastAPI's route class included) is asked."""
    customer = guarded(categories=["contact"], subject="cid")(_noop)
    for cls in (Route, APIRoute, _Sniffing):
        app = FastAPI()
        app.router.routes[:] = [cls("/customers/{cid:int}", customer, methods=["GET"])]
        routes = AppRoutes(app.router, RouteTable(()), ())
        first = routes.resolve(_scope("http", "GET", "/customers/1", "", False))
        assert first.subject == "1"
        scope = _scope("http", "GET", "/customers/007", "", True)
        key = ("http", "GET", "", "/customers/007")
        matched = routes.quick(scope, key)
        if cls is _Sniffing:  # its matches reads the header: only it can answer
            assert matched is None
            assert routes.resolve(scope).endpoint is None
        else:
            assert isinstance(matched, Answer)
            assert matched.resolved.subject == "7"  # as the handler receives it
            assert matched.resolved.endpoint is customer
        # a HEAD: Starlette's GET route takes it, FastAPI's does not (a PARTIAL match)
        head = routes.resolve(_scope("http", "HEAD", "/customers/8", "", False))
        assert head.endpoint is customer
        assert (head.rule is not None) is (cls is Route)

