"""The per-route plan (``middleware._plan``) judges as ``enforce()`` does, for every request.

``GuardMiddleware`` judges a request whose route answer and ``Authorization``
value it has seen before with the route's precomputed plan
(``Planner.judge``); anything else takes the interpreted path (``enforce()``).
These tests hold the plan to the interpreted path: for random sequences of
requests to the example service (every route kind: public, read, write,
minimised, undeclared; odd methods, subjects and paths; valid, expired, forged,
repeated and proxy-asserted identities; well-formed, padded, long, malformed and
repeated purposes), whenever the plan answers, its outcome, the ruling left to
record and every call it made on the guard are those of the interpreted path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import INVALID_SPAN
from tokenkit import Keys, guard_settings

from examples.customers import create_app
from guard._guard import Asked, Checked, Guard, Ruling
from guard._types import Decision, HttpContext, Request
from middleware import GuardMiddleware, guarded
from middleware._router import AppRoutes, Resolved
from middleware.identity import PROXY_SECRET_HEADER, Authenticator


class Recording:
    """The real guard's decisions; every call on it written down; commits answer at once."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.holder = guard.holder
        self.calls: list[tuple[object, ...]] = []

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False, current: Any = None) -> Ruling:
        self.calls.append(("decide", request, http, per_category))
        return self.guard.decide(request, http, per_category=per_category, current=current)

    def decide_asked(self, asked: Asked, current: Any = None) -> Ruling:
        """The guard's memo of a repeated read, written down as the decision it stands for."""
        self.calls.append(("decide", asked.request, asked.http, False))
        return self.guard.decide_asked(asked, current)

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked:
        self.calls.append(("acommit", ruling.request, ruling.decision, status))
        return Checked(ruling.decision, "event-1", ruling.categories)

    async def arecord_denial(self, request: Request, decision: Decision,
                             http: HttpContext | None = None, *,
                             detail: str | None = None, source: str | None = None
                             ) -> Checked:
        self.calls.append(("denial", request, decision, http))
        return Checked(decision, "event-2")

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked:
        raise AssertionError("not on the judged path")

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        raise AssertionError("not on the judged path")

    def post(self, ruling: Ruling, status: int) -> object:
        raise AssertionError("not on the judged path")

    def enqueue_outcome(self, *_: object) -> object:
        raise AssertionError("not on the judged path")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("plan")
    settings = guard_settings(base, keys, trusted_proxies=["10.0.0.0/8"],
                              proxy_secret_file=keys.proxy_file)
    guard = Guard.from_settings(settings)
    recording = Recording(guard)
    auth = Authenticator.from_settings(settings.identity, announce=False)
    app = create_app(settings, enforce=False)

    @app.api_route("/any/{customer_id}",
                   methods=["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW"])
    @guarded(categories=["identity", "contact"], subject="customer_id")
    async def any_method(customer_id: str) -> dict[str, str]:  # a read, for every method
        return {}

    @app.post("/search/{customer_id}")
    @guarded(categories=["contact"], action="write", subject="customer_id")
    async def search(customer_id: str) -> dict[str, str]:
        return {}

    middleware = GuardMiddleware(app, guard=recording, settings=settings, authenticator=auth)
    middleware.resolve({"type": "http", "method": "GET", "path": "/", "root_path": "",
                        "headers": []})  # walks the app's routes
    now = int(time.time())
    tokens = {
        "crm": keys.mint("ec", sub="svc:crm"),
        "crm-limited": keys.mint("ed", sub="svc:crm", purposes=["relationship.management"]),
        "marketing": keys.mint("rsa", sub="svc:marketing"),
        "analytics": keys.mint("hs", sub="svc:analytics"),
        "unknown": keys.mint("ec", sub="svc:unknown"),
        "expired": keys.mint("ec", sub="svc:crm", iat=now - 4000, nbf=now - 4000,
                             exp=now - 3000),
        "early": keys.mint("ec", sub="svc:crm", nbf=now + 3000, exp=now + 4000),
        "forged": keys.mint("ec", sub="svc:crm")[:-6] + "AAAAAA",
    }
    yield {"mw": middleware, "guard": recording, "tokens": tokens, "keys": keys}
    guard.close()


_PATHS = ["/customers/c-0001"] * 4 + ["/customers/c-0002", "/customers/c-0001/record",
          "/customers/c-0001/record",
          "/customers/c-0001/contact", "/customers/c-0001/payment", "/customers/c-0001/health",
          "/customers/c-0001/loyalty", "/customers/stats", "/customers", "/healthz", "/readyz",
          "/internal/debug", "/nowhere", "/customers/c;1", "/customers/" + "c" * 129,
          "/customers/.", "/customers/c-0001/", "/any/c-0001", "/any/c-0001", "/search/c-0001"]
_METHODS = ["GET"] * 6 + ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW",
            "G T", "X" * 40]
_DECLARED = [("GET", "/customers/c-0001"), ("HEAD", "/customers/c-0002"),
             ("GET", "/customers/c-0001/record"), ("PUT", "/customers/c-0001/contact"),
             ("POST", "/customers"), ("GET", "/customers/stats"), ("POST", "/search/c-0001"),
             *[(m, "/any/c-0001") for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE",
                                             "BREW")]]
_PURPOSES = ["relationship.management"] * 6 + [" relationship.management ", "marketing.advertising",
             "analytics.improvement", "world.domination", "", "Relationship Management!",
             "relationship.management.x", "a" * 201, "relationship.management\x85",
             "promotion.prize_draw"]
_AUTH = ["crm", "crm-limited", "marketing", "analytics", "unknown", "expired", "early", "forged"]


@st.composite
def _requests(draw: st.DrawFn, tokens: dict[str, str], proxy_secret: str
              ) -> tuple[str, str, list[tuple[bytes, bytes]], str]:
    """A method, a path, the raw header list and the peer address of one request."""
    headers: list[tuple[bytes, bytes]] = [(b"host", b"svc")]
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):  # mostly one; none, or a repeat
        kind = draw(st.sampled_from(["crm"] * 8 + [*_AUTH, "lower", "spaced", "basic", "empty",
                                                   "junk"]))
        token = tokens.get(kind, tokens["crm"])
        value = {"lower": f"bearer {token}", "spaced": f"Bearer  {token} ", "basic": "Basic eA==",
                 "empty": "", "junk": "Bearer x.y.z"}.get(kind, f"Bearer {token}")
        headers.append((b"authorization", value.encode("latin-1")))
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        headers.append((b"x-purpose", draw(st.sampled_from(_PURPOSES)).encode("latin-1")))
    if draw(st.integers(0, 5)) == 0:  # a proxy asserting a caller, with or without its secret
        headers.append((b"x-caller", draw(st.sampled_from([b"svc:crm", b"svc:marketing"]))))
        if draw(st.booleans()):
            secret = draw(st.sampled_from([proxy_secret, "wrong-" + "x" * 30]))
            headers.append((PROXY_SECRET_HEADER.encode(), secret.encode()))
    headers.append((b"accept", b"*/*"))
    order = draw(st.permutations(range(len(headers))))
    if draw(st.booleans()):  # a route and one of the methods it is declared for
        method, path = draw(st.sampled_from(_DECLARED))
    else:
        method, path = draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_PATHS))
    return (method, path, [headers[i] for i in order],
            draw(st.sampled_from(["127.0.0.1", "10.1.2.3"])))


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]], peer: str
           ) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": headers,
            "client": (peer, 40000), "server": ("127.0.0.1", 8000)}


def _same_ruling(a: Ruling | None, b: Ruling | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.decision, a.request, a.categories) == (b.decision, b.request, b.categories)


async def _compare(world: dict[str, Any], method: str, path: str,
                   headers: list[tuple[bytes, bytes]], peer: str) -> str:
    """Judge a request by the plan, then by enforce(): the same answer when the plan gives one."""
    mw: GuardMiddleware = world["mw"]
    guard: Recording = world["guard"]
    guard.calls.clear()
    judged = mw._planner.judge(_scope(method, path, list(headers), peer), method, INVALID_SPAN)
    if judged is None or isinstance(judged, Resolved):  # nothing decided: enforce() judges
        if judged is not None:  # with the answer the app's router gives
            assert judged == mw.resolve(_scope(method, path, list(headers), peer))
        planned = None
    elif isinstance(judged, tuple):
        planned = judged
    else:
        planned = (await judged, None)
    planned_calls = list(guard.calls)
    guard.calls.clear()
    outcome, ruling = await mw._judge(_scope(method, path, list(headers), peer), "http", method)
    if planned is None:
        assert planned_calls == []  # nothing was decided: the interpreted path judges it
        return "interpreted"
    assert planned[0] == outcome, (method, path, headers)
    assert _same_ruling(planned[1], ruling), (method, path, headers)
    assert planned_calls == guard.calls, (method, path, headers)
    return "planned " + ("public" if outcome.decision is None else outcome.decision.reason.value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_plan_answers_as_enforce_does(world: dict[str, Any], data: st.DataObject) -> None:
    requests = data.draw(st.lists(_requests(world["tokens"], world["keys"].proxy_secret),
                                  min_size=1, max_size=6))

    async def run() -> None:
        for request in requests + requests:  # each twice: the second may be planned
            event(await _compare(world, *request))

    asyncio.run(run())


def test_a_common_read_is_planned_after_its_first(world: dict[str, Any]) -> None:
    """The plan is used: a token and route seen once are judged by it the next time."""
    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]

    async def run() -> list[str]:
        return [await _compare(world, "GET", "/customers/c-0042", headers, "127.0.0.1")
                for _ in range(3)]

    _first, *later = asyncio.run(run())
    assert later == ["planned allowed", "planned allowed"]
    mw: GuardMiddleware = world["mw"]
    assert mw.auth.remembered >= 1


def test_a_path_asked_for_the_first_time_is_planned(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token seen before on a path never asked (a new subject's id in it) is planned at once,
    the app's router asked once; a path whose answer is not remembered is asked once too."""
    mw: GuardMiddleware = world["mw"]
    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]
    asked: list[str] = []
    resolve, quick = AppRoutes._resolve, AppRoutes.quick

    def counted(self: AppRoutes, scope: dict[str, Any], key: Any) -> Resolved:
        asked.append(scope["path"])
        return resolve(self, scope, key)

    def matched(self: AppRoutes, scope: dict[str, Any], key: Any) -> Any:
        asked.append(scope["path"])
        return quick(self, scope, key)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def durable(ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("event-3")
        return done

    async def run() -> list[str]:
        await _compare(world, "GET", "/customers/c-0048", headers, "127.0.0.1")  # the token
        monkeypatch.setattr(AppRoutes, "_resolve", counted)  # the router asked, or ...
        monkeypatch.setattr(AppRoutes, "quick", matched)  # ... its routes' patterns matched
        monkeypatch.setattr(world["guard"], "begin_commit", durable)
        judged = [await _compare(world, "GET", "/customers/c-0049", headers, "127.0.0.1")]
        for path in ("/customers/c-0050", "/customers/" + "d" * 300):
            await mw(_scope("GET", path, list(headers), "127.0.0.1"), receive, send)
        return judged

    assert asyncio.run(run()) == ["planned allowed"]
    assert asked == ["/customers/c-0049", "/customers/c-0050", "/customers/" + "d" * 300]
    # a path's first request keeps no plan nor request of its own (most paths are asked
    # once): it shares its route's plan; its second keeps its request
    routes = mw._app_routes
    assert routes is not None
    answer = routes._answers[("http", "GET", "", "/customers/c-0049")]
    other = routes._answers[("http", "GET", "", "/customers/c-0050")]
    assert answer.shape is not None
    assert answer.plan is answer.shape.plan is other.plan
    assert not any(key[0] is answer for key in mw._planner.seen)
    assert asyncio.run(_compare(world, "GET", "/customers/c-0049", headers,
                                "127.0.0.1")) == "planned allowed"
    assert any(key[0] is answer for key in mw._planner.seen)


def test_the_outcome_a_handler_reads_holds_no_ruling(world: dict[str, Any]) -> None:
    """Only the middleware records a read's ruling: the outcome in the scope has none."""
    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]
    mw: GuardMiddleware = world["mw"]

    async def run() -> None:
        outcome, ruling = await mw._judge(_scope("GET", "/customers/c-0043", headers,
                                                 "127.0.0.1"), "http", "GET")
        assert ruling is not None
        assert outcome.pending is None
        judged = mw._planner.judge(_scope("GET", "/customers/c-0043", headers, "127.0.0.1"),
                                   "GET", INVALID_SPAN)
        assert isinstance(judged, tuple)
        assert judged[0].pending is None
        assert judged[1] is not None
        assert dataclasses.replace(judged[0]) == outcome

    asyncio.run(run())


def test_a_path_not_remembered_is_interpreted(world: dict[str, Any], tmp_path: Path) -> None:
    """A long path's answer is never remembered: it is judged by enforce() every time."""
    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]
    path = "/customers/" + "c" * 300

    async def run() -> list[str]:
        return [await _compare(world, "GET", path, headers, "127.0.0.1") for _ in range(2)]

    assert asyncio.run(run()) == ["interpreted", "interpreted"]


@pytest.mark.parametrize("how", ["insert", "replace", "reassign"])
def test_a_route_changed_at_run_time_is_judged_by_its_new_declaration(
    world: dict[str, Any], how: str
) -> None:
    """A remembered answer (and its plan) holds only while the app's routes are unchanged."""
    from starlette.routing import Route

    mw: GuardMiddleware = world["mw"]
    router = mw._app_routes._router if mw._app_routes is not None else None
    assert router is not None
    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]

    @guarded(categories=["financial"], subject="who")
    async def takeover(who: str) -> dict[str, str]:
        return {}

    before = list(router.routes)
    original = router.routes
    first = next(i for i, r in enumerate(before)
                 if getattr(r, "path", "") == "/customers/{customer_id}")

    async def run() -> list[str]:
        return [await _compare(world, "GET", "/customers/c-0045", headers, "127.0.0.1")
                for _ in range(2)]

    try:
        assert asyncio.run(run())[-1] == "planned allowed"
        fresh = Route("/customers/{who}", takeover, methods=["GET"])
        if how == "insert":
            router.routes.insert(0, fresh)
        elif how == "replace":
            router.routes[first] = fresh
        else:
            router.routes = [fresh, *before]
        # the old answer no longer holds: judged afresh, then planned by the new route
        assert asyncio.run(run()) == ["interpreted", "planned category_not_in_purpose"]
    finally:
        original[:] = before
        router.routes = original
    assert asyncio.run(run()) == ["interpreted", "planned allowed"]


def test_a_planner_that_fails_leaves_the_request_to_enforce(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is decided by a planner that raises: enforce() judges (and refuses) the request."""
    mw: GuardMiddleware = world["mw"]

    def broken(*_: object) -> None:
        raise RuntimeError("the planner failed")

    monkeypatch.setattr(type(mw._planner), "judge", broken)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = _scope("GET", "/customers/c-0046", [(b"x-purpose", b"relationship.management")],
                   "127.0.0.1")
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 401  # no token: refused by enforce(), not a crash
    assert scope["state"]["guard"].decision.reason.value == "unauthenticated"


def test_a_planned_read_hands_the_span_it_read_to_decide(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The middleware reads the current span once; decide takes it instead of asking again."""
    from opentelemetry import trace

    token = world["tokens"]["crm"]
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", b"relationship.management")]
    mw: GuardMiddleware = world["mw"]
    span = trace.NonRecordingSpan(trace.SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
        trace_flags=trace.TraceFlags(1)))
    asked: list[int] = []

    def counted(context: object = None) -> trace.Span:
        asked.append(1)
        return INVALID_SPAN

    async def run() -> object:
        await _compare(world, "GET", "/customers/c-0044", headers, "127.0.0.1")  # remembered
        monkeypatch.setattr(trace, "get_current_span", counted)
        return mw._planner.judge(_scope("GET", "/customers/c-0044", headers, "127.0.0.1"),
                                 "GET", span)

    judged = asyncio.run(run())
    assert isinstance(judged, tuple)
    _outcome, ruling = judged
    assert ruling is not None
    assert ruling.fields is not None
    assert (ruling.fields["trace_id"], ruling.fields["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert asked == []


def test_a_purpose_is_well_formed_only_as_a_whole() -> None:
    """The interpreted path and the plan read one purpose rule, matched whole (a trailing
    line break is not part of a key)."""
    from middleware._enforce import _purpose_key

    assert _purpose_key("relationship.management")
    for bad in ("relationship.management\n", "relationship..management", "Relationship", ""):
        assert not _purpose_key(bad), bad
