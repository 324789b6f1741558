"""What a remembered route answer fixes for every request that gets it, computed once.

A route answer (``middleware._router.Answer``) is remembered per (type, method,
root_path, path); everything :func:`middleware._enforce.enforce` derives from it
alone is the same for every request with that key: the rule, whether the route is
public, the method's and the subject's bounds, the categories, action and HTTP
context of the decision, whether an allowed read may be deferred and whether the
response is minimised. :class:`Plan` holds that, so a request only adds what is its
own: its caller and its purpose. A path not asked before (one naming a new data subject,
usually) is resolved by :meth:`Planner.judge` itself, as ``enforce()`` resolves it, so
its first request is planned too when its answer may be remembered. A path matched by its
route's compiled pattern (``AppRoutes.quick``) shares one plan with every path of that
route and method (its subject, checked once per path, apart); a path's request
(:class:`_Seen`) is kept only once its path is asked again.

:meth:`Planner.judge` judges a request with a plan when nothing of the request itself needs
the interpreted path's checks: the caller's ``Authorization`` value was verified
before and is valid now (``Authenticator.known``), the purpose is absent or a
well-formed key of at most :data:`~middleware._bounds.MAX_PURPOSE` characters, and
the caller's token lets it declare that purpose. Anything else (a malformed value, a
missing or new token, a proxy's caller header, an undeclared route) is left to
``enforce()``, which judges and records it; the answer of :meth:`Planner.judge` is
the answer ``enforce()`` gives for the same request (tests/middleware/test_plan.py holds
it to that for random requests).

A path's request asked again with the same purpose value and ``Authorization`` value
(compared as bytes, not hashed again) is judged from what its :class:`_Seen` kept (up to
:data:`CALLERS` of them per path and purpose value, one per ``Authorization`` value, so
that a few callers taking turns on a path each keep theirs): the
caller, and the purpose and the token's leave to declare it as found before, while
``Authenticator.holds`` says the token still proves that caller (the keys it was verified
with still in force, not expired, no proxy's caller header); the guard's
``decide_asked`` then answers from the decision kept with the request while the policy
it was made under is in force and the subject has no register entry, and the outcome of
that very decision is the one kept (tests/middleware/test_plan_memo.py).

A fault of the planner itself (an exception out of :meth:`Planner.judge`, which then
decided nothing) leaves the request to ``enforce()`` too (fail-safe), and is counted
(:attr:`Planner.faults`, the OpenTelemetry counter ``guard.http.planner_faults``) and
logged at debug level with the exception's type and where it was raised
(:meth:`Planner.fault`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import INVALID_SPAN
from starlette.types import Scope

from guard._guard import Asked, Ruling
from guard._types import Action, Decision, HttpContext, Request
from guard.audit._otel import decision_attributes
from middleware._bounds import MAX_METHOD, MAX_PURPOSE, method_ok, subject_ok
from middleware._enforce import (
    METHODS,
    PURPOSE_KEY,
    SAFE_METHODS,
    GuardLike,
    Outcome,
    _public_counter,
    counted_method,
    http_context,
    settled,
    unjudged,
)
from middleware._router import Answer, AppRoutes, Resolved
from middleware.fields import FieldPlan
from middleware.identity import Authenticator, Caller

__all__ = ["CALLERS", "PURPOSES", "REMEMBERED_PURPOSE", "REQUESTS", "Judged", "Plan", "Planner"]

_log = logging.getLogger("guard.middleware")
_fault_counter = metrics.get_meter("purpose_guard.middleware").create_counter(
    "guard.http.planner_faults", unit="{request}",
    description="Requests the planned path failed on (judged by the interpreted path instead)",
)

Judged = tuple[Outcome, Ruling | None] | Coroutine[Any, Any, Outcome] | Resolved
"""What :meth:`Planner.judge` answers: an outcome and the ruling left to record, a
coroutine for the outcome of a ruling being recorded now, or the route's answer it found
for ``enforce()`` to judge with (a route whose answer is not remembered)."""

PURPOSES = 1024
"""Raw purpose values remembered as well-formed (then forgotten all at once)."""
REMEMBERED_PURPOSE = 256
"""The longest raw purpose value (bytes) remembered: a value is judged stripped, so blanks
after a purpose make new values of any length; a longer one is judged and forgotten."""
REQUESTS = 4096
"""Requests remembered, all paths together (then forgotten all at once)."""
CALLERS = 4
"""Requests remembered per (route answer, raw purpose value), one per ``Authorization``
value: a new value past them takes the place of the one kept longest."""
_NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


class Plan:
    """What every request with one route answer shares (its subject apart: :meth:`fits`).

    One plan serves every path an answer's :class:`~middleware._router.Shape` stands for
    (the paths of one route and method, a subject's id in each); an answer found otherwise
    has a plan of its own.

    Args:
        resolved: The route answer (its subject is not read).
        method: The request method of its key.
    """

    __slots__ = ("action", "categories", "defer", "endpoint", "fields", "http", "minimise",
                 "public", "public_attributes", "quick", "route", "subject_name")

    def __init__(self, resolved: Resolved, method: str) -> None:
        rule = resolved.rule
        self.endpoint = resolved.endpoint
        self.route = rule.template if rule is not None else "<undeclared>"
        self.public: tuple[Outcome, None] | None = None
        """The outcome of every request to a public route (None: not public)."""
        self.public_attributes: Mapping[str, str] = _NO_ATTRIBUTES
        """A public route's counter attributes."""
        if rule is not None and rule.public:
            self.public = Outcome(200, None, None, None, rule.template, resolved.endpoint), None
            self.public_attributes = {"http.route": self.route,
                                      "http.request.method": counted_method(method)}
        self.categories: tuple[str, ...] = rule.categories if rule is not None else ()
        self.action = rule.action if rule is not None else Action.READ
        self.fields: FieldPlan | None = rule.fields if rule is not None else None
        self.minimise = (rule is not None and rule.mode == "minimise"
                         and rule.fields is not None)
        self.defer = self.action is Action.READ and method in SAFE_METHODS
        self.http: HttpContext = http_context(method, self.route)
        self.subject_name = rule.subject if rule is not None else None
        """The subject's parameter, when the rule names one."""
        self.quick = (rule is not None and not rule.public
                      and (method in METHODS or method_ok(method)))
        """Nothing of the route stands in the way of :meth:`Planner.judge` (a subject that
        does not :meth:`fit` apart)."""

    def fits(self, subject: str | None) -> bool:
        """Whether an answer's subject can be audited as it is (``subject_ok``)."""
        name = self.subject_name
        return (subject is None or name is None
                or subject_ok(subject, self.route, name))


class _Seen:
    """What the requests with one route answer and purpose value share while they come with
    one ``Authorization`` value: the caller it proved (the authenticator's answer, and the
    keys it was verified with: :meth:`~middleware.identity.Authenticator.holds`), the request
    (with its decision, for the guard's :meth:`~guard._guard.Guard.decide_asked`), the last
    decision and its outcome (a read's, with no ruling in it)."""

    __slots__ = ("asked", "authorization", "caller", "decision", "hit", "keys_set", "outcome")

    def __init__(self, request: Request, http: HttpContext, authorization: bytes | None,
                 hit: tuple[Caller, float, float], keys_set: int) -> None:
        self.asked = Asked(request, http)
        self.authorization = authorization
        self.caller = hit[0]
        self.hit = hit
        self.keys_set = keys_set
        self.decision: Decision | None = None
        self.outcome: Outcome | None = None


class Planner:
    """Judges requests with their remembered route's plan (see the module's docstring).

    Args:
        auth: Who is calling.
        guard: The guard.
        purpose_header: The lower-case header that declares the purpose.
    """

    __slots__ = ("asking", "auth", "faults", "guard", "kept", "purpose_header", "purposes",
                 "routes", "seen")

    def __init__(self, auth: Authenticator, guard: GuardLike, purpose_header: str) -> None:
        self.auth = auth
        self.guard = guard
        self.asking: Callable[[Asked, trace.Span], Ruling] | None = getattr(
            guard, "decide_asked", None)
        """The guard's :meth:`~guard._guard.Guard.decide_asked`, when it has one."""
        self.purpose_header = purpose_header.encode("latin-1")
        self.routes: AppRoutes | None = None
        """The app's routes, once walked (None: every request takes the interpreted path)."""
        self.purposes: dict[bytes, str] = {}
        """Raw purpose values found well-formed, and the purpose each declares."""
        self.seen: dict[tuple[Answer, bytes | None], list[_Seen]] = {}
        """By (route answer, raw purpose value), newest first: for each of up to
        :data:`CALLERS` ``Authorization`` values it was asked with, the caller it proved, the
        request, and the last decision's outcome."""
        self.kept = 0
        """Entries in :attr:`seen` (at most :data:`REQUESTS`)."""
        self.faults = 0
        """Requests :meth:`judge` failed on (:meth:`fault`): each was judged by ``enforce()``."""

    def fault(self, exc: BaseException) -> None:
        """Count a request :meth:`judge` raised ``exc`` for (it decided nothing), and log it.

        The request is then judged by ``enforce()``, as any the plan does not take. The
        debug line names the exception's type and where it was raised, never its message
        (it may hold the request's values).

        Args:
            exc: What :meth:`judge` raised.
        """
        self.faults += 1
        _fault_counter.add(1)
        if _log.isEnabledFor(logging.DEBUG):
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = (f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None
                     else "?")
            _log.debug("the planned path failed (%s at %s): the request is judged step by "
                       "step", type(exc).__name__, where)

    def judge(self, scope: Scope, method: str, span: trace.Span) -> Judged | None:
        """Judge an HTTP request with its route's plan; None when it needs ``enforce()``.

        Nothing is decided when None (or a route's answer) is returned. Otherwise: the
        outcome and, for an allowed read left for the caller to record, its ruling (the
        outcome then has no ``pending``: the ruling is the caller's alone to record); or a
        coroutine to await for the outcome when the ruling is being recorded now (a
        denial, a write, a read asked with a method that is not safe). A path whose
        answer is not remembered is resolved here (the app's router asked, as
        ``enforce()`` asks it) and planned when its answer may be remembered; otherwise
        its answer is returned, for ``enforce()`` to judge with (not asked twice).

        Args:
            scope: The request's scope (``type`` is ``http``).
            method: Its method.
            span: The current span.
        """
        routes = self.routes
        if (routes is None or "path_params" in scope or "fastapi" in scope
                or len(method) > MAX_METHOD):  # enforce() refuses it, and keeps nothing of it
            return None
        # routes.remembered(key), inline: the answer while the router's routes are the list
        # it was found in, holding the same routes
        key = ("http", method, scope.get("root_path", ""), scope["path"])
        answer = routes._answers.get(key)
        first = answer is None  # the path's first request (often its only one: a subject's id)
        if answer is None:  # found now, as enforce() finds it (and remembered when it may be)
            try:
                fresh = routes.found(scope, key)
            except Exception:  # enforce() refuses it, and says why
                return None
            if not isinstance(fresh, Answer):  # not remembered: enforce() judges it with it
                return fresh
            answer = fresh
        else:
            held = answer.routes
            if routes._router.routes is not held or held != answer.held:
                return None
        plan: Plan | None = answer.plan
        if plan is None:
            shape = answer.shape
            if shape is not None:  # one plan for every path of the route and method
                plan = shape.plan
                if plan is None:
                    plan = shape.plan = Plan(answer.resolved, method)
                answer.plan = plan
            else:
                plan = Plan(answer.resolved, method)
                if not first:  # kept from the path's second request on (as its request, below)
                    answer.plan = plan
        if plan.public is not None:
            _public_counter.add(1, plan.public_attributes)
            return plan.public
        raw = scope["headers"]
        if not plan.quick or type(raw) is not list:
            return None
        subject = answer.subject
        fits = answer.fits
        if fits is None:
            fits = answer.fits = plan.fits(subject)
        if not fits:
            return None
        try:
            headers: dict[bytes, bytes] = dict(raw)
            if len(headers) != len(raw):  # a name repeated: the first of repeats counts
                headers = dict(reversed(raw))
        except (TypeError, ValueError):  # not name/value pairs: enforce() refuses them
            return None
        authorization = headers.get(b"authorization")
        value = headers.get(self.purpose_header)
        auth = self.auth
        seen: _Seen | None = None
        absent = False  # no entry of this Authorization value kept (looked for)
        if not first:
            entries = self.seen.get((answer, value))
            asking = self.asking
            if entries is not None and asking is not None and not plan.minimise:
                for seen in entries:  # the entry of this very Authorization value, if kept
                    if seen.authorization == authorization:
                        break
                else:
                    seen = None
                    absent = True
                if seen is not None and auth.holds(seen.hit, seen.keys_set, headers):
                    # asked again with the same token, still valid, and the same purpose
                    # value: the caller, the purpose and the token's leave to declare it are
                    # the ones found before
                    caller = seen.caller
                    try:
                        ruling = asking(seen.asked, span)
                    except Exception:
                        return unjudged(seen.asked.request, plan.http, caller,
                                        plan.endpoint), None
                    decision = ruling.decision
                    if decision is seen.decision:  # the allowed read decided before: its outcome
                        if span is not INVALID_SPAN and span.is_recording():
                            span.set_attributes(decision_attributes(decision))
                        return seen.outcome, ruling  # type: ignore[return-value]  # set with it
                    return self._ruled(ruling, plan, caller, seen, span)
        keys_set = auth.keys_set
        hit = auth.known(authorization, headers)
        if hit is None:
            return None
        caller = hit[0]
        purpose = ""
        if value is not None:
            known = self.purposes.get(value)
            if known is None:
                known = self._purpose(value)
                if known is None:
                    return None
            purpose = known
        if purpose and caller.purposes is not None and not caller.may_declare(purpose):
            return None
        http = plan.http
        if first:  # kept only when the path is asked again: each object kept per path
            # (most are asked once) is one the cyclic collector walks and promotes
            request = Request(caller.id, purpose, plan.categories, plan.action, subject or None)
        else:
            seen = self._seen(answer, plan, purpose, authorization, value, hit, keys_set,
                              absent=absent)
            request = seen.asked.request
        try:
            if seen is None or plan.minimise or self.asking is None:  # nothing kept with it
                ruling = self.guard.decide(request, http, per_category=plan.minimise,
                                           current=span)
            else:  # the guard's decision kept with the request seen
                ruling = self.asking(seen.asked, span)
        except Exception:
            return unjudged(request, http, caller, plan.endpoint), None
        return self._ruled(ruling, plan, caller, seen, span)

    def _ruled(self, ruling: Ruling, plan: Plan, caller: Caller, seen: _Seen | None,
               span: trace.Span) -> Judged:
        """What :meth:`judge` answers for ``ruling``: an allowed read left to record (its
        outcome kept in ``seen``, when there is one), or the coroutine recording it now."""
        try:
            decision = ruling.decision
            if decision.allowed and plan.defer:
                if span is not INVALID_SPAN and span.is_recording():  # no call without a span
                    span.set_attributes(decision_attributes(decision))
                judged = ruling.categories
                if judged is not None:  # minimised: what it releases is this ruling's
                    return Outcome(200, decision, None, caller, plan.route, plan.endpoint,
                                   frozenset(judged.released), plan.fields), ruling
                if seen is None:
                    return Outcome(200, decision, None, caller, plan.route, plan.endpoint), ruling
                outcome = seen.outcome
                if outcome is None or seen.decision is not decision:
                    outcome = seen.outcome = Outcome(200, decision, None, caller, plan.route,
                                                     plan.endpoint)
                    seen.decision = decision
                return outcome, ruling
        except Exception:
            return unjudged(ruling.request, plan.http, caller, plan.endpoint), None
        return settled(self.guard, ruling, plan.http, caller, plan.endpoint,
                       plan.fields, span)

    def _purpose(self, value: bytes) -> str | None:
        """The purpose a raw header value declares when it is well-formed (then remembered,
        unless longer than :data:`REMEMBERED_PURPOSE` bytes)."""
        if type(value) is not bytes:
            return None
        purpose = value.decode("latin-1").strip()
        if len(purpose) > MAX_PURPOSE or (purpose and PURPOSE_KEY.fullmatch(purpose) is None):
            return None
        if len(value) <= REMEMBERED_PURPOSE:
            known = self.purposes
            if len(known) >= PURPOSES:
                known.clear()
            known[value] = purpose
        return purpose

    def _seen(self, answer: Answer, plan: Plan, purpose: str,  # noqa: PLR0917
              authorization: bytes | None, value: bytes | None,
              hit: tuple[Caller, float, float], keys_set: int, *, absent: bool = False
              ) -> _Seen:
        """The entry for requests with ``answer`` (its path) and the purpose ``value``
        (declaring ``purpose``) that ``authorization`` proved ``hit`` for: the one kept, while
        it holds that very answer, or a new one in its place (the value's old entry, or past
        :data:`CALLERS` values the oldest's). ``absent``: the entries were looked through
        for ``authorization`` just now, and it has none."""
        seen = self.seen
        key = (answer, value)
        entries = seen.get(key)
        at = -1
        if entries is not None and not absent:
            for i, old in enumerate(entries):
                if old.authorization == authorization:
                    if old.hit is hit and old.keys_set == keys_set:
                        return old
                    at = i  # proved again (new keys, verified anew): replaced by this answer
                    break
        entry = _Seen(Request(hit[0].id, purpose, plan.categories, plan.action,
                              answer.subject or None), plan.http, authorization, hit, keys_set)
        if entries is not None:
            if at >= 0:
                entries[at] = entry
                return entry
            if len(entries) >= CALLERS:  # the oldest makes way
                entries.pop()
                entries.insert(0, entry)
                return entry
        if self.kept >= REQUESTS:
            seen.clear()
            self.kept = 0
            entries = None
        if entries is None:
            entries = seen[key] = []
        entries.insert(0, entry)
        self.kept += 1
        return entry
