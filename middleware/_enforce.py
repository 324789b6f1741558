"""The one enforcement flow shared by the middleware and the sidecar.

request -> route -> identity -> purpose -> engine + durable audit -> outcome.
A denial is recorded with the status it is answered with (one event); an
allowed ``write`` is durable before this returns; an allowed ``read`` is too,
unless the caller defers it (``defer_reads``) to record it with the response's
status before the response starts. Only a read asked with a safe method (GET,
HEAD, OPTIONS, TRACE) is deferred: a route that declares ``read`` for DELETE or
POST still has its decision durable before its handler runs.
Anything that cannot be judged is a denial; nothing here knows about a
particular web framework beyond the problem+json response it can render.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import INVALID_SPAN
from starlette.responses import Response

from guard._guard import Checked, Ruling
from guard._types import Action, Decision, HttpContext, Reason, Request, denial, quick_init
from guard.audit._otel import decision_attributes
from middleware._bounds import (
    MAX_CALLER,
    MAX_METHOD,
    MAX_PURPOSE,
    cut,
    method_ok,
    subject_ok,
)
from middleware._router import Resolved
from middleware.fields import FieldPlan
from middleware.identity import Authenticator, Caller, IdentityError
from middleware.problem import problem_response
from middleware.routes import RouteRule, RouteTable

__all__ = [
    "SAFE_METHODS",
    "GuardLike",
    "Outcome",
    "deferred",
    "enforce",
    "http_context",
    "recorded",
    "route_label",
    "settled",
    "unjudged",
]

_log = logging.getLogger("guard.middleware")
PURPOSE_KEY = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
"""A well-formed purpose key (matched whole: ``fullmatch``)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods every bound accepts (:func:`method_ok` is asked of any other)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods whose handler the caller may run before a read's decision is durable (RFC 9110 9.2.1)."""
_SAFE = SAFE_METHODS
_purposes: set[str] = set()
"""Purpose keys seen well-formed (at most ``_CONTEXTS``; then forgotten)."""
_NO_EXTRA: Mapping[str, str] = MappingProxyType({})
_CONTEXTS = 1024
_contexts: dict[tuple[str, str, int | None, bool], HttpContext] = {}
"""HTTP contexts by (method, route template, status, cut off): the same for every request of a
route (a decision's, a refusal's, an outcome's), built once."""
_public_counter = metrics.get_meter("purpose_guard.middleware").create_counter(
    "guard.http.public_requests", unit="{request}",
    description="Requests to public routes (no decision, not audited)",
)


def counted_method(method: str) -> str:
    """A method as a metric's attribute: a standard one, else ``_OTHER`` (OpenTelemetry's
    HTTP conventions; a client's made-up methods would each be a series kept)."""
    return method if method in METHODS or method == "TRACE" else "_OTHER"


class GuardLike(Protocol):
    """The part of :class:`guard._guard.Guard` the enforcement points use."""

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked: ...

    def decide(
        self, request: Request, http: HttpContext | None = None, *, per_category: bool = False,
        current: trace.Span | None = None,
    ) -> Ruling: ...

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked: ...

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]: ...

    def post(self, ruling: Ruling, status: int) -> object: ...

    def enqueue_outcome(
        self, decision_id: str, status: int, http: HttpContext | None = None
    ) -> object: ...

    async def arecord_denial(
        self, request: Request, decision: Decision, http: HttpContext | None = None,
        *, detail: str | None = None, source: str | None = None,
    ) -> Checked: ...


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request was judged.

    Args:
        status: 200 (allowed or public), 401 or 403.
        decision: The decision; None only for public routes.
        decision_id: The audit event id of the decision, when it was recorded.
        caller: The proven caller, when there is one.
        route: The matched route template (``<undeclared>`` when none matched).
        endpoint: The endpoint judged, when the app's router was asked (middleware).
        released: A minimising route's released categories (None: not minimised).
        fields: A minimising route's field plan, applied to its response body.
        pending: An allowed read whose decision is not recorded yet (``defer_reads``):
            the caller records it with :meth:`Guard.acommit` and the response's status
            before any of the response leaves. ``GuardMiddleware`` keeps it for itself:
            the outcome it puts in the request's state has none.
    """

    status: int
    decision: Decision | None
    decision_id: str | None
    caller: Caller | None
    route: str | None = None
    endpoint: object | None = None
    released: frozenset[str] | None = None
    fields: FieldPlan | None = None
    pending: Ruling | None = None

    @property
    def allowed(self) -> bool:
        """True when the request may proceed (allowed or public)."""
        return self.status == 200

    def problem(self) -> Response | None:
        """The problem+json response for a 401/403, None when allowed."""
        if self.status == 200 or self.decision is None:
            return None
        return problem_response(
            self.status,
            self.decision.reason,
            self.decision.purpose,
            self.decision.categories,
            self.decision_id,
        )


def route_label(rule: RouteRule | None) -> str:
    """The route as it is audited: the template, never the raw path (it may name a person)."""
    return rule.template if rule is not None else "<undeclared>"


async def enforce(
    guard: GuardLike,
    auth: Authenticator,
    routes: RouteTable | None,
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    peer: str | None,
    purpose_header: str = "x-purpose",
    resolved: Resolved | None = None,
    filters: bool = True,
    defer_reads: bool = False,
) -> Outcome:
    """Judge one HTTP request and record the decision durably.

    The route and the subject are found first, then every request-derived value
    is checked against its bound (a malformed request is refused whoever sends
    it, and stored cut), then the caller is authenticated.

    Args:
        guard: The guard (policy + audit trail).
        auth: Who is calling.
        routes: routes.csv: the first row matching ``method`` and ``path`` (file
            order) declares the route; unused when ``resolved`` is given.
        method: The HTTP method.
        path: The request path (without query string), decoded.
        headers: Request headers with lower-case names.
        peer: The client's IP address.
        purpose_header: Lower-case header that declares the purpose.
        resolved: The endpoint and declaration, when the caller resolved them
            through the app's router.
        filters: The caller filters the response body of a ``minimise`` route;
            False (a check endpoint, a WebSocket): such a route is judged whole.
        defer_reads: An allowed ``read`` asked with a safe method is returned
            unrecorded (``Outcome.pending``, no ``decision_id``): the caller records
            it, with the status it answers with, before any data leaves. Any other
            method's read is durable before this returns, whatever the route declares.
    """
    endpoint: object | None = None
    subject: str | None = None
    if resolved is not None:
        rule, endpoint, subject = resolved.rule, resolved.endpoint, resolved.subject
    else:
        found = routes.match(method, path) if routes is not None else None
        rule = found.rule if found is not None else None
        if found is not None and rule is not None and rule.subject is not None:
            subject = found.params.get(rule.subject)
    if rule is not None and rule.public:
        _public_counter.add(1, {"http.route": rule.template,
                                "http.request.method": counted_method(method)})
        return Outcome(200, None, None, None, rule.template, endpoint)

    purpose = headers.get(purpose_header, "").strip()
    problem: str | None = None
    if method not in METHODS and not method_ok(method):
        problem, method = "method", cut(method, MAX_METHOD)
    if len(purpose) > MAX_PURPOSE:
        problem, purpose = problem or "purpose_length", cut(purpose, MAX_PURPOSE)
    elif purpose and purpose not in _purposes and not _purpose_key(purpose):
        problem = problem or "purpose_header"
    if subject is not None and rule is not None and rule.subject is not None and not subject_ok(
        subject, rule.template, rule.subject
    ):
        problem, subject = problem or "subject", None
    categories = rule.categories if rule is not None else ()
    action = rule.action if rule is not None else Action.READ
    http = http_context(method, route_label(rule))
    try:
        caller = auth.authenticate(headers, peer)
    except IdentityError as exc:
        request = Request("", purpose, categories, action, subject or None)
        # A caller header refused: the event names the peer that asserted it.
        by = None if exc.asserted_by is None else "peer:" + exc.asserted_by
        if problem is not None:
            return await _refuse(guard, 403, Reason.MALFORMED_REQUEST, request, http,
                                 caller=None, detail=problem, endpoint=endpoint, by=by,
                                 source=peer or "-")
        return await _refuse(guard, 401, Reason.UNAUTHENTICATED, request, http,
                             caller=None, detail=str(exc), endpoint=endpoint, by=by,
                             source=peer or "-")
    caller_id = caller.id
    if len(caller_id) > MAX_CALLER:
        problem, caller_id = problem or "caller_length", cut(caller_id, MAX_CALLER)
    if problem is not None:
        request = Request(caller_id, purpose, categories, action, subject or None)
        return await _refuse(guard, 403, Reason.MALFORMED_REQUEST, request, http,
                             caller=caller, detail=problem, endpoint=endpoint)
    if rule is None:
        request = Request(caller_id, purpose, ())
        return await _refuse(guard, 403, Reason.ROUTE_NOT_DECLARED, request, http,
                             caller=caller, endpoint=endpoint)
    request = Request(caller_id, purpose, rule.categories, rule.action, subject or None)
    if purpose and not caller.may_declare(purpose):
        return await _refuse(guard, 403, Reason.PURPOSE_NOT_GRANTED, request, http,
                             caller=caller, detail="token_purposes", endpoint=endpoint)
    minimise = filters and rule.mode == "minimise" and rule.fields is not None
    try:
        ruling = guard.decide(request, http, per_category=minimise)
        if (ruling.decision.allowed and defer_reads and request.action is Action.READ
                and method in _SAFE):
            return deferred(ruling, http, caller, endpoint, rule.fields, trace.get_current_span())
        checked = await guard.acommit(ruling, None if ruling.decision.allowed else 403)
    except Exception:
        return unjudged(request, http, caller, endpoint)
    return recorded(checked, http, caller, endpoint, rule.fields)


def deferred(  # noqa: PLR0917 - positional: once per request
        ruling: Ruling, http: HttpContext, caller: Caller, endpoint: object | None,
        fields: FieldPlan | None, span: trace.Span) -> Outcome:
    """The outcome of an allowed read left for the caller to record (``Outcome.pending``).

    Args:
        ruling: The allowing ruling, not recorded yet.
        http: The HTTP side of the decision.
        caller: The proven caller.
        endpoint: The endpoint judged, if known.
        fields: The route's field plan (applied when the ruling was per category).
        span: The current span (the decision is put on it when it records).
    """
    decision = ruling.decision
    if span.is_recording():
        span.set_attributes(decision_attributes(decision))
    judged = ruling.categories
    if judged is None:
        return Outcome(200, decision, None, caller, http.route, endpoint, None, None, ruling)
    return Outcome(200, decision, None, caller, http.route, endpoint,
                   frozenset(judged.released), fields, ruling)


async def settled(  # noqa: PLR0917 - positional: once per request
        guard: GuardLike, ruling: Ruling, http: HttpContext, caller: Caller,
        endpoint: object | None, fields: FieldPlan | None,
        span: trace.Span | None = None) -> Outcome:
    """Record ``ruling`` now (a write, a denial, a read not deferred); its outcome.

    Args:
        guard: The guard.
        ruling: The ruling :meth:`Guard.decide` made.
        http: The HTTP side of the decision.
        caller: The proven caller.
        endpoint: The endpoint judged, if known.
        fields: The route's field plan (applied when the ruling was per category).
        span: The current span, when the caller has read it (None: looked up).
    """
    try:
        checked = await guard.acommit(ruling, None if ruling.decision.allowed else 403)
    except Exception:
        return unjudged(ruling.request, http, caller, endpoint)
    return recorded(checked, http, caller, endpoint, fields, span)


def unjudged(request: Request, http: HttpContext, caller: Caller | None,
             endpoint: object | None) -> Outcome:
    """The outcome when the guard failed on ``request``: an unrecorded ``internal_error`` denial."""
    _log.exception("the guard could not judge %s %s", http.method, http.route)
    decision = denial(Reason.INTERNAL_ERROR, request)
    _annotate_span(decision, None)
    return Outcome(403, decision, None, caller, http.route, endpoint)


def recorded(checked: Checked, http: HttpContext, caller: Caller, endpoint: object | None,  # noqa: PLR0917
             fields: FieldPlan | None, span: trace.Span | None = None) -> Outcome:
    """The outcome of a decision recorded (or refused for want of a record).

    Args:
        checked: The decision and its event's id.
        http: The HTTP side of the decision.
        caller: The proven caller.
        endpoint: The endpoint judged, if known.
        fields: The route's field plan (applied when the ruling was per category).
        span: The current span, when the caller has read it (None: looked up).
    """
    decision = checked.decision
    # An event that could not be recorded has no id an auditor could find.
    decision_id = checked.decision_id or None
    if decision.reason is Reason.AUDIT_UNAVAILABLE:
        decision_id = None
    _annotate_span(decision, decision_id, span)
    judged = checked.categories
    if judged is not None and decision.allowed:
        return Outcome(200, decision, decision_id, caller, http.route,
                       endpoint, frozenset(judged.released), fields)
    return Outcome(200 if decision.allowed else 403, decision, decision_id, caller, http.route,
                   endpoint)


def _purpose_key(purpose: str) -> bool:
    """Whether ``purpose`` is a well-formed purpose key (remembered when it is)."""
    if PURPOSE_KEY.fullmatch(purpose) is None:
        return False
    if len(_purposes) >= _CONTEXTS:
        _purposes.clear()
    _purposes.add(purpose)
    return True


def http_context(method: str, route: str, status: int | None = None, aborted: bool = False
                 ) -> HttpContext:
    """The (immutable, shared) HTTP side of a decision or an outcome for ``method`` on ``route``.

    Args:
        method: The request method.
        route: The route template.
        status: The status answered (a refusal's, an outcome's); None: not known yet.
        aborted: The response was cut short after its status was sent (an outcome's).
    """
    key = (method, route, status, aborted)
    http = _contexts.get(key)
    if http is None:  # built once: a frozen dataclass with a default factory costs ~10,000
        http = HttpContext(method, route, status, _NO_EXTRA, aborted)  # instructions a time
        if len(_contexts) >= _CONTEXTS:
            _contexts.clear()
        _contexts[key] = http
    return http


async def _refuse(
    guard: GuardLike,
    status: int,
    reason: Reason,
    request: Request,
    http: HttpContext,
    *,
    caller: Caller | None,
    detail: str | None = None,
    endpoint: object | None = None,
    by: str | None = None,
    source: str | None = None,
) -> Outcome:
    """Record a denial raised before the engine, with its status, and turn it into an outcome.

    ``by`` (``peer:<address>``) is the event's ``detail``: who asserted a refused caller header.
    ``source``: the client's address, when the request proves no caller (such refusals are
    recorded one by one up to a bound, then counted: :class:`guard._refusals.RefusalBudget`).
    """
    decision = denial(reason, request, _policy_version(guard), detail=_detail_code(detail))
    http = (http_context(http.method, http.route, status) if http.extra is _NO_EXTRA
            else HttpContext(http.method, http.route, status, http.extra))
    decision_id: str | None = None
    try:
        decision_id = await _record_denial(guard, request, decision, http, by, source)
    except Exception:
        _log.exception("could not record a %s denial", reason.value)
    if detail and reason is Reason.UNAUTHENTICATED and decision_id:  # counted: not logged
        _log.info("unauthenticated %s %s: %s%s", http.method, http.route, detail,
                  "" if by is None else " (" + by + ")")
    _annotate_span(decision, decision_id)
    return Outcome(status, decision, decision_id, caller, http.route, endpoint)


async def _record_denial(  # noqa: PLR0917 - positional: once per refusal
    guard: GuardLike, request: Request, decision: Decision, http: HttpContext,
    by: str | None = None, source: str | None = None,
) -> str | None:
    """Durably record a denial made before the engine ran; its event id, None if unrecorded
    (or only counted)."""
    checked = await guard.arecord_denial(request, decision, http, detail=by, source=source)
    return checked.decision_id or None


def _policy_version(guard: GuardLike) -> str:
    holder: Any = getattr(guard, "holder", None)
    try:
        return str(holder.current.version)
    except Exception:
        return ""


def _detail_code(detail: str | None) -> str | None:
    """A short, stable tag for the audit rule column (not the free-text message)."""
    if detail is None:
        return None
    return detail if detail.replace("_", "").isalnum() else None


def _annotate_span(decision: Decision, decision_id: str | None,
                   span: trace.Span | None = None) -> None:
    """Put the decision on the current (server) span (``span``: read already), if it records."""
    if span is None:
        span = trace.get_current_span()
    if span is INVALID_SPAN or not span.is_recording():
        return
    span.set_attributes(decision_attributes(decision))
    if decision_id:
        span.set_attribute("guard.decision_id", decision_id)
