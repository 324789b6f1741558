"""``GuardMiddleware``: purpose and need-to-know enforced in-process, pure ASGI.

Mount it on any Starlette or FastAPI app::

    app.add_middleware(GuardMiddleware)

Every HTTP request and WebSocket to a guarded route is judged before the app
sees it, and nothing of a response leaves before its decision is durable in the
audit trail. An allowed ``read`` is one event: the decision with the response's
status, made durable when the app starts its response and before that start is
passed on (a 403 ``audit_unavailable`` replaces the response if it cannot be).
An allowed ``write`` is durable before the handler runs, and its final status
is queued as an ``outcome`` event when the app is done.
The route judged is the endpoint the app's own router will call (see
``middleware._router``); an app without a Starlette router is matched against
routes.csv. A scope of another type than these and ``lifespan`` is refused.

The lifespan passes through; when the app reports its start-up complete, the
middleware resolves the app's declarations and freezes the start-up heap out of
the cyclic collector once per process (``middleware.collector``; ``gc_freeze``),
before the server hears of it. With no lifespan (uvicorn ``--lifespan off``) both
happen at the first request.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from opentelemetry.trace import Span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard._errors import PolicyError
from guard._guard import Guard, Ruling
from guard._types import Action, Reason, denial
from guard.config import Settings, load_settings
from middleware._bounds import method_ok
from middleware._enforce import GuardLike, Outcome, enforce, route_label
from middleware._minimise import DEFAULT_MAX_BODY, Minimiser
from middleware._plan import Planner
from middleware._record import Record
from middleware._router import AppRoutes, Resolved, find_router
from middleware._span import CONTEXT, INVALID_SPAN, SPAN_KEY, current_span
from middleware.collector import freeze_once
from middleware.identity import Authenticator
from middleware.problem import problem_response
from middleware.routes import RouteRule, RouteTable

__all__ = ["GuardMiddleware"]

_log = logging.getLogger("guard.middleware")
_HANDLERS = "starlette.exception_handlers"


def _default_routes(settings: Settings) -> RouteTable:
    """``routes.csv`` next to the policy (``[policy] dir`` or ./policies), if there is one."""
    candidates = []
    if settings.sidecar.routes is not None:
        candidates.append(settings.sidecar.routes)
    candidates.append((settings.policy.dir or Path("policies")) / "routes.csv")
    for path in candidates:
        if path.exists():
            return RouteTable.from_csv(path)
    return RouteTable(())


class GuardMiddleware:
    """Pure ASGI middleware that judges every request before the app sees it.

    Args:
        app: The ASGI app to guard.
        guard: The guard (policy + audit); built from ``settings`` when None.
        settings: Settings; read from guard.toml and the environment when None.
        routes: A route table or a routes.csv path; by default ``routes.csv``
            beside the policy, if present. With a Starlette/FastAPI app its rows
            declare the endpoints with the same method and template;
            :func:`middleware.guarded` declarations on endpoints come first.
        authenticator: Who is calling; built from ``settings.identity`` when None.
        public_paths: Route templates that need no decision (any method); still counted.
        purpose_header: The header that declares the purpose.
        max_minimised_body: The largest response body of a ``minimise`` route, in
            bytes (it is buffered and filtered); a larger one is refused.
        gc_freeze: Freeze the start-up heap out of the cyclic collector when the app's
            start-up is complete (``gc.collect()``, then ``gc.freeze()``, once per
            process; a heap frozen already is left as it is); None reads
            ``sidecar.gc_freeze`` (on by default), False leaves the collector alone.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: GuardLike | None = None,
        settings: Settings | None = None,
        routes: RouteTable | Path | None = None,
        authenticator: Authenticator | None = None,
        public_paths: Sequence[str] = ("/healthz", "/readyz"),
        purpose_header: str | None = None,
        max_minimised_body: int = DEFAULT_MAX_BODY,
        gc_freeze: bool | None = None,
    ) -> None:
        self.app = app
        settings = settings if settings is not None else load_settings()
        self._owned: Guard | None = None
        if guard is None:
            guard = self._owned = Guard.from_settings(settings)
        self.guard: GuardLike = guard
        self.auth = authenticator or Authenticator.from_settings(settings.identity)
        if isinstance(routes, Path):
            routes = RouteTable.from_csv(routes)
        elif routes is None:
            routes = _default_routes(settings)
        self._table = routes
        self._public_paths = tuple(public_paths)
        public = [RouteRule("*", p, (), Action.READ, None, True) for p in public_paths]
        self._base = routes.extended(public)
        self._app_routes: AppRoutes | None = None
        self._resolved = False
        self._freeze = settings.sidecar.gc_freeze if gc_freeze is None else gc_freeze
        self.purpose_header = (purpose_header or settings.identity.purpose_header).lower()
        self._wanted = frozenset(
            h.encode("latin-1")
            for h in (self.purpose_header, *self.auth.header_names)
        )
        self.max_minimised_body = max_minimised_body
        self._planner = Planner(self.auth, guard, self.purpose_header)
        self.public_requests: Counter[str] = Counter()
        """Requests to public routes, by route template (they make no audit event)."""

    @property
    def planner_faults(self) -> int:
        """Requests the planned path failed on; each was judged by ``enforce()`` instead."""
        return self._planner.faults

    @property
    def routes(self) -> RouteTable:
        """routes.csv and the public paths, as matched for an app without a Starlette router."""
        return self._base

    def resolve(self, scope: Scope) -> Resolved | None:
        """The endpoint the app will call for ``scope`` and its declaration.

        None when the app has no Starlette router (routes.csv is matched instead).
        The walk of the app's routes and declarations is made once, at first use.
        """
        if not self._resolved:  # no lifespan start-up resolved it: the first request's turn
            self._walk_app()
            self._freeze_heap()
        app_routes = self._app_routes
        return app_routes.resolve(scope) if app_routes is not None else None

    def _walk_app(self) -> None:
        """Read the app's routes and declarations (raises PolicyError for a bad one)."""
        router = find_router(self.app)
        if router is not None:
            self._app_routes = AppRoutes(router, self._table, self._public_paths)
        self._planner.routes = self._app_routes
        self._resolved = True

    def _freeze_heap(self) -> None:
        """Freeze the start-up heap, the first time only (``gc_freeze``)."""
        if self._freeze:
            self._freeze = False
            frozen = freeze_once()
            if frozen is not None:
                _log.info("start-up heap frozen: %d objects the collector no longer walks",
                          frozen)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        context = CONTEXT  # trace.get_current_span(), in one look-up (middleware._span)
        if context is not None:
            span = context.get().get(SPAN_KEY)
            if span is None or not isinstance(span, Span):
                span = INVALID_SPAN
        else:
            span = current_span()
        ruling: Ruling | None
        if kind == "http":
            method = scope["method"]
            planner = self._planner
            try:
                judged = planner.judge(scope, method, span)
            except Exception as exc:  # nothing decided: the interpreted path judges (counted)
                planner.fault(exc)
                judged = None
            if isinstance(judged, tuple):
                outcome, ruling = judged
            elif judged is None or isinstance(judged, Resolved):
                outcome, ruling = await self._judge(scope, kind, method, judged)
            else:
                outcome, ruling = await judged, None
            del judged  # not kept alive while the app runs and a read waits for its decision
        elif kind == "websocket":
            method = "GET"
            outcome, ruling = await self._judge(scope, kind, method)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        else:  # a kind of connection the guard cannot judge never reaches the app
            raise ValueError(f"the guard judges http and websocket connections only, not "
                             f"{str(kind)[:32]!r}: refused")
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["guard"] = outcome
        if outcome.decision is None:  # public route
            self.public_requests[outcome.route or "<undeclared>"] += 1
            await self.app(scope, receive, send)
            return
        if outcome.status != 200:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
                return
            response = outcome.problem() or problem_response(
                403, Reason.INTERNAL_ERROR, None, (), None)
            await response(scope, receive, send)
            return
        # The app's call, inline (not a coroutine of its own): while a read's response
        # waits for its decision, the fewer frames and objects alive per request, the
        # less the cyclic collector walks.
        record = Record(self.guard, outcome, ruling, scope, receive, send, span)
        del ruling  # the record's alone: freed once its decision is queued
        inner: Send = record
        if outcome.fields is not None and outcome.released is not None and "method" in scope:
            inner = Minimiser(inner, scope, receive, outcome.fields, outcome.released,
                              limit=self.max_minimised_body, decision_id=outcome.decision_id,
                              purpose=outcome.decision.purpose if outcome.decision else None,
                              route=outcome.route or "<undeclared>", opened=record.open)
        alone = _HANDLERS not in scope  # no Starlette app around this one set its entries
        try:
            await self.app(scope, receive, inner)
        finally:
            if not record.settled:
                verdict = record.returned()
                if verdict is not None:  # a whole response held: its commit awaited here
                    if alone:  # the app's call is over: what it kept in the scope for it goes
                        # (a Starlette or FastAPI app's exception handlers and exit stacks,
                        # exited when it returned: 7 objects the cyclic collector walks per
                        # read waiting, as the server keeps the scope alive), one by one
                        pop = scope.pop
                        pop(_HANDLERS, None)
                        pop("fastapi_middleware_astack", None)
                        pop("fastapi_inner_astack", None)
                        pop("fastapi_function_astack", None)
                    try:  # noqa: SIM105 - no suppress() object alive across the wait
                        await verdict
                    except Exception:  # noqa: S110 - judged by the record
                        pass
                    del verdict
                whole = record.out()
                if whole is None:
                    await record.close(kind == "http")
                else:
                    try:  # sent here: no coroutine of the record's per read
                        await send(whole[0])
                        await send(whole[1])
                    except BaseException:
                        record.cut_off()
                        raise
                    record.finished = True

    async def _judge(self, scope: Scope, kind: str, method: str,
                     resolved: Resolved | None = None) -> tuple[Outcome, Ruling | None]:
        """How the request is judged (a denial when it cannot be: fail closed), by ``enforce()``.

        The outcome, and the ruling of an allowed read left to record with its response's
        status (taken out of the outcome: the app that reads the outcome cannot record it).

        Args:
            scope: The request's scope.
            kind: ``http`` or ``websocket``.
            method: The request method (``GET`` for a WebSocket).
            resolved: The route's answer, when the planner found it (not asked again).
        """
        headers = wanted_headers(scope["headers"], self._wanted)
        client = scope.get("client")
        try:
            if resolved is None:
                resolved = self.resolve(scope)
            outcome = await enforce(
                self.guard, self.auth, self._base,
                method=method, path=_route_path(scope), headers=headers,
                peer=client[0] if client else None,
                purpose_header=self.purpose_header, resolved=resolved,
                filters=kind == "http",  # a WebSocket's messages are never filtered
                defer_reads=True,  # recorded with the status, before the response starts
            )
            caller = outcome.caller
            authorization = headers.get("authorization")
            if caller is not None and authorization is not None:  # known() next time
                self.auth.remember(authorization.encode("latin-1"), caller)
            ruling = outcome.pending
            if ruling is not None:
                outcome = dataclasses.replace(outcome, pending=None)
            return outcome, ruling
        except Exception:  # fail closed: what cannot be judged is refused
            # Never the raw path: it may name a person. The template, or nothing.
            route = "<unresolved>" if resolved is None else route_label(resolved.rule)
            _log.exception("the guard failed on %s %s", method if method_ok(method) else "?",
                           route)
            return Outcome(403, denial(Reason.INTERNAL_ERROR), None, None), None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan through; close the guard this middleware opened, at the end.

        Once the app has started, its ``guarded()`` declarations are resolved, so a
        declaration that disagrees with its response model stops the start-up; then
        the start-up heap, the app's own included, is frozen (``gc_freeze``) before
        the server is told. A failed start-up freezes nothing.
        """

        failed: list[PolicyError] = []

        async def started(message: Message) -> None:
            if failed:  # the framework's own report of the failure: already sent
                return
            if message["type"] == "lifespan.startup.complete":
                if not self._resolved:
                    try:
                        self._walk_app()
                    except PolicyError as exc:
                        failed.append(exc)
                        _log.error("route declarations: %s", exc)
                        await send({"type": "lifespan.startup.failed",
                                    "message": f"route declarations: {exc}"})
                        raise
                self._freeze_heap()
            await send(message)

        try:
            await self.app(scope, receive, started)
        finally:
            if self._owned is not None:
                self._owned.close()


def wanted_headers(raw: Iterable[tuple[bytes, bytes]], wanted: frozenset[bytes]
                   ) -> dict[str, str]:
    """The request headers named in ``wanted`` (lower-case), decoded; the first of repeats counts.

    Args:
        raw: The ASGI scope's ``headers``.
        wanted: The lower-case header names to keep, as bytes.
    """
    headers: dict[str, str] = {}
    for name, value in raw:
        if name in wanted and (key := name.decode("latin-1")) not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def _route_path(scope: Scope) -> str:
    """The path the app routes on (``root_path`` removed), as Starlette computes it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root):]
        if not rest or rest.startswith("/"):
            return rest or "/"
    return path
