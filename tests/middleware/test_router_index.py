"""The router index: asking only its candidates picks exactly the route the full walk picks.

For any routes (literal and parameterised segments, every convertor, a
convertor of the app's own that spans ``/``, trailing slashes, mounts, hosts,
WebSocket routes, a route class with its own ``matches``) and any path, the
first FULL match and else the first PARTIAL one among the index's candidates
is the one Starlette's router picks from all its routes. The property through
the whole middleware (endpoint judged == endpoint dispatched) is in
tests/security/test_routes_resolution.py.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router, WebSocketRoute
from tokenkit import Keys, guard_settings

from examples.customers import create_app
from middleware._router import _Index, _pick, find_router, index_key


class _Slashy(Convertor[str]):
    """An app's own convertor whose values span a ``/`` (``a/b``)."""

    regex = "[a-z0-9]+/[a-z0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("slashy", _Slashy())


class _Loose(Route):
    """A route class with its own ``matches``: every path with its first segment."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        if scope["path"].startswith(self.path.split("{")[0]):
            return Match.FULL, {"endpoint": self.endpoint, "path_params": {}}
        return Match.NONE, {}


async def _endpoint(request: Any) -> PlainTextResponse:
    return PlainTextResponse("x")


_LITERALS = ["a", "me", "1", "1.5", "x"]
_KINDS = ["lit", "lit", "lit", "str", "int", "float", "uuid", "path", "slashy"]
_UUID = "0b3b6f24-5f5a-4d0e-8e53-4b1c2f0b9a10"


@st.composite
def _routes(draw: st.DrawFn) -> list[BaseRoute]:
    names = itertools.count()

    def template() -> str:
        segments = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(_KINDS))
            if kind == "lit":
                segments.append(draw(st.sampled_from(_LITERALS)))
            else:
                name = f"p{next(names)}"
                spec = "" if kind == "str" else f":{kind}"
                segments.append(draw(st.sampled_from([f"{{{name}{spec}}}",
                                                      f"v{{{name}{spec}}}"])))
        return "/" + "/".join(segments) + draw(st.sampled_from(["", "", "/"]))

    out: list[BaseRoute] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["route"] * 6 + ["ws", "mount", "root", "host", "loose"]))
        if kind == "route":
            methods = sorted(draw(st.sets(st.sampled_from(["GET", "POST"]), min_size=1)))
            out.append(Route(template(), _endpoint, methods=methods))
        elif kind == "ws":
            out.append(WebSocketRoute(template(), _endpoint))
        elif kind == "mount":
            out.append(Mount(draw(st.sampled_from(["/a", "/me", "/{m}", "/a/x"])),
                             routes=[Route("/", _endpoint)]))
        elif kind == "root":
            out.append(Mount("", routes=[Route("/", _endpoint)]))
        elif kind == "host":
            out.append(Host("api.example", app=Router(routes=[Route("/", _endpoint)])))
        else:
            out.append(_Loose("/" + draw(st.sampled_from(_LITERALS)) + "/{q}", _endpoint))
    return out


_path = st.lists(st.sampled_from([*_LITERALS, "", "7", "2.5", _UUID, "b", "v1", "vx"]),
                 min_size=0, max_size=6).map(lambda s: "/" + "/".join(s))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(routes=_routes(), paths=st.lists(_path, min_size=1, max_size=8),
       kind=st.sampled_from(["http", "websocket"]), method=st.sampled_from(["GET", "POST"]),
       root=st.sampled_from(["", "/root"]))
def test_the_index_picks_what_the_full_walk_picks(
    routes: list[BaseRoute], paths: list[str], kind: str, method: str, root: str
) -> None:
    index = _Index(routes)
    for path in paths:
        scope = {"type": kind, "path": root + path, "root_path": root, "method": method,
                 "headers": [(b"host", b"svc")]}
        walked = _pick(routes, scope)
        candidates = index.candidates(path)
        assert [r for r in routes if r in candidates] == list(candidates)  # the router's order
        indexed = _pick(candidates, scope)
        assert indexed[0] is walked[0], (path, walked, indexed)
        assert indexed[1] == walked[1]


def test_only_routes_starlette_compiles_as_written_are_indexed() -> None:
    assert index_key(Route("/customers/{customer_id}", _endpoint)) == ("customers", 2, None)
    assert index_key(Route("/customers/{c}/contact/", _endpoint)) == ("customers", 4, "")
    assert index_key(Route("/files/{rest:path}", _endpoint)) == ("files", None, None)
    assert index_key(Route("/s/{x:slashy}", _endpoint)) == ("s", None, None)
    assert index_key(Mount("/api", routes=[])) == ("api", None, None)
    assert index_key(Mount("", routes=[])) == (None, None, None)
    assert index_key(Host("h", app=Router())) is None
    assert index_key(_Loose("/a/{q}", _endpoint)) is None
    odd = Route("/a/{b}", _endpoint)
    odd.path_regex = Route("/{b}", _endpoint).path_regex  # compiled from something else
    assert index_key(odd) is None


def test_the_example_service_asks_one_route_per_request(keys: Keys, tmp_path: Any) -> None:
    app = create_app(guard_settings(tmp_path, keys), enforce=False)
    router = find_router(app)
    assert router is not None
    index = _Index(router.routes)
    assert len(router.routes) > 10
    for path in ["/customers/c-0042", "/customers/c-0042/record", "/customers/c-1/contact",
                 "/customers/stats", "/healthz"]:
        scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
        candidates = index.candidates(path)
        assert _pick(candidates, scope)[0] is _pick(router.routes, scope)[0]
        assert len(candidates) <= 2, (path, candidates)


def test_a_path_ending_in_a_newline_is_matched_against_every_route() -> None:
    """A compiled template's ``$`` also matches before a last newline: ``/a`` matches
    ``/a\\n``, ``/a/{b}/`` matches ``/a/1/\\n``, though neither names the path's segments."""
    routes: list[BaseRoute] = [Route("/a", _endpoint), Route("/a/{b}/", _endpoint),
                               Route("/{x}", _endpoint), Route("/{x}/{y}/{z}", _endpoint)]
    index = _Index(routes)
    for path, picked in [("/a\n", 0), ("/a/1/\n", 1), ("/b\n", 2), ("/a/1/z\n", 3)]:
        scope = {"type": "http", "path": path, "root_path": "", "method": "GET"}
        assert _pick(routes, scope)[0] is routes[picked]
        assert _pick(index.candidates(path), scope)[0] is routes[picked], path
