"""``Guard``: the one entry point of enforcement points: decide, record durably, fail closed."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic, perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN

from guard._errors import AuditTimeoutError, AuditUnavailableError
from guard._refusals import RefusalBudget, source_of
from guard._types import Action, Decision, HttpContext, Reason, Request, denial, quick_init
from guard.audit import EventKind, JournalTrail, load_hmac_key, new_event_id
from guard.audit._event import OUTCOME_ABORTED, decision_fields, outcome_fields, policy_fields
from guard.audit._fields import IdFields
from guard.audit._otel import decision_attributes, makes_no_span, span_ids
from guard.audit._otel import tracer as default_tracer
from guard.engine import CategoryDecision, decide, decide_categories

_log = logging.getLogger("guard")

if TYPE_CHECKING:
    from guard.config import Settings
    from guard.policy._compiled import CompiledPolicy
    from guard.policy._holder import PolicyHolder, ReloadResult
    from guard.policy._pgsource import StartPolicy
    from guard.rights import Change, Entry, Register


class Deadlines:
    """Fail each commit's future that is not done by its deadline.

    One timer for all of them, instead of a timer per request: it runs while
    commits are watched, at a tenth of the bound (at most once a second), so a
    future fails at most that much after its deadline. Nothing is made per commit:
    its entry (the decision's :class:`Handed` fields, or a :class:`Watched`) holds
    its future and its deadline, and what to do when one fails is one callable for
    all of them. Deadlines are read on :func:`time.monotonic` (asyncio's loop
    clock), not by a call of the loop's ``time()`` per future.

    Args:
        loop: The event loop the futures belong to.
        expired: Called with a failed commit's ``fields`` (when they are not None),
            after its future failed.
    """

    __slots__ = ("_expired", "_pending", "_tick", "_timer", "_within", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 expired: Callable[[Any], object] | None = None) -> None:
        self.loop = loop
        self._expired = expired
        self._pending: deque[Handed | Watched] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._within = -1.0
        self._tick = 1.0

    def watch(self, entry: Handed | Watched, within: float) -> None:
        """Fail ``entry.future`` with TimeoutError if it is not done within ``within`` seconds.

        Args:
            entry: The commit: its ``future``; its ``deadline`` is set here.
            within: Seconds.
        """
        if within != self._within:
            self._within, self._tick = within, min(1.0, max(0.01, within / 10))
        pending = self._pending
        # Forget the commits done since (the oldest first): kept until the next tick, a
        # second's worth of requests (each future and its event fields) would live long
        # enough for the cyclic collector to promote them into its oldest generation,
        # whose full collections, with the interpreter lock held, stall every request.
        while pending and pending[0].future.done():  # type: ignore[union-attr]  # set by then
            pending.popleft()
        entry.deadline = monotonic() + within
        pending.append(entry)
        if self._timer is None:
            self._timer = self.loop.call_later(self._tick, self._check)

    def _check(self) -> None:
        self._timer = None
        pending = self._pending
        now = monotonic()
        while pending:
            entry = pending[0]
            future = entry.future
            if future is not None and not future.done():
                if entry.deadline > now:
                    break
                future.set_exception(TimeoutError("audit event not durable in time"))
                fields = entry.fields
                if fields is not None and self._expired is not None:
                    self._expired(fields)
            pending.popleft()
        if pending:  # the oldest still waits
            self._timer = self.loop.call_later(self._tick, self._check)


class Watched:
    """A commit the deadline watch holds that is not a decision's (no refusal to queue)."""

    __slots__ = ("deadline", "future")
    fields = None

    def __init__(self, future: asyncio.Future[str]) -> None:
        self.future: asyncio.Future[str] | None = future
        self.deadline = 0.0


class Handed(IdFields):
    """A decision's event fields, which are also its commit (one object per read waiting).

    The journal's writer takes them as its entry (:class:`guard.audit._jwriter.Entry`):
    the event, its future and its result; the deadline watch holds them with their
    deadline. So the :class:`Ruling` is freed as soon as its decision is queued.
    """

    __slots__ = ("deadline", "future", "result", "waker")
    kind: ClassVar[EventKind] = EventKind.DECISION
    deadline: float
    """When the deadline watch fails the commit (:func:`time.monotonic`)."""
    future: asyncio.Future[str] | None
    """Set by the journal's writer: the commit's future, resolved once the event is durable."""
    result: str | BaseException | None
    """Set by the journal's writer: the event's id, or why it is not durable."""
    waker: Any
    """Set by the journal's writer: how it tells the loop the commit is done."""

    @property
    def fields(self) -> Handed:
        """The event's fields: these."""
        return self


LATE_REFUSAL = "audit_unavailable"
"""``detail`` of the ``outcome`` event (status 403) that follows a decision the journal
wrote after its request had been refused for want of it (:meth:`Guard.begin_commit`)."""

_CATEGORY_CACHE = 4096
"""Per-category judgements remembered by :meth:`Guard.decide` (``per_category``; then cleared)."""
_DECISION_CACHE = 4096
"""Decisions (and their event's fields) remembered per policy by :meth:`Guard.decide`; then
cleared."""


_Decided = tuple[Decision, dict[str, Any]]
"""A remembered decision and its event's fields (copied for each event)."""
_generations = itertools.count(1)
"""Numbers of the guards' decision memos, one per policy put in force (never the same twice)."""


class Asked:
    """One request an enforcement point asks about again and again, for :meth:`Guard.decide_asked`.

    The planner keeps one per remembered route answer and purpose value: the request
    and its HTTP side never change, so the decision and its event's fields are kept
    here for the policy they were decided under (the guard's memo of that policy,
    by its number) and decided afresh under any other. Nothing here is used for a
    subject with a register entry: that is decided every time.

    Args:
        request: The request (immutable).
        http: Its HTTP side (immutable).
    """

    __slots__ = ("decided", "generation", "http", "request")

    def __init__(self, request: Request, http: HttpContext | None) -> None:
        self.request = request
        self.http = http
        self.generation = 0
        """The number of the guard's memo ``decided`` came from (0: none yet)."""
        self.decided: _Decided | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Checked:
    """A decision and the id of its audit event (for the outcome that follows)."""

    decision: Decision
    decision_id: str
    categories: CategoryDecision | None = None
    """The per-category judgement, for a request decided with ``per_category=True``."""


@dataclass(slots=True, eq=False)
class Ruling:
    """A decision made by :meth:`Guard.decide` and not yet recorded.

    Record it once, with the HTTP status it is answered with when that is known:
    :meth:`Guard.acommit` (durable on return) or :meth:`Guard.post` (queued). On an
    event loop its fields (:class:`Handed`) are the journal writer's entry: the ruling
    is not kept by the commit.

    Args:
        decision: The decision.
        request: The request decided.
        categories: The per-category judgement (``per_category=True``).
        fields: The audit event's fields; None when the decision cannot be recorded.
    """

    decision: Decision
    request: Request
    categories: CategoryDecision | None = None
    fields: dict[str, Any] | None = None
    queued: bool = False
    """Handed to the journal's writer (by a commit or :meth:`Guard.post`): never again."""


class Guard:
    """Decide with the policy in force and record every decision before data flows.

    Args:
        holder: The policy holder (``guard.policy.PolicyHolder``).
        trail: The audit trail decisions are recorded in.
        hmac_key: Key for data-subject pseudonyms.
        tracer: OpenTelemetry tracer for the decision spans (default: the global one).
        register: The subject register decisions naming a subject are judged against
            (None: no subject has an entry).
    """

    durable_within: float = 30.0
    """Seconds a request waits for its audit event to become durable (as the
    synchronous path does); past that it is refused ``audit_unavailable``."""

    def __init__(
        self,
        holder: PolicyHolder,
        trail: JournalTrail,
        *,
        hmac_key: bytes,
        tracer: trace.Tracer | None = None,
        register: Register | None = None,
    ) -> None:
        self.holder = holder
        self.trail = trail
        self.register = register
        self._category_cache: dict[tuple[object, ...], tuple[CategoryDecision, str]] = {}
        self._decisions: tuple[CompiledPolicy | None, dict[tuple[object, ...], _Decided], int] = (
            None, {}, 0)
        self._tracer = tracer or default_tracer
        self._deadlines: Deadlines | None = None
        self.refusals: RefusalBudget | None = None
        """Refusals proving no caller: which are recorded one by one (None: all of them)."""
        # decide()'s fields carry their trace ids, so the trail's start_fields would hand
        # them over as they are: the ruling handed to its writer directly (no object made)
        self._hand = trail.writer.hand
        if register is not None:  # the subjects the register digested: not digested again
            trail.writer.share_digests(register.digests, register.pseudonym)

    @classmethod
    def from_settings(cls, settings: Settings, holder: PolicyHolder | None = None) -> Guard:
        """Open the audit trail, record the policy in force, and record every reload.

        Args:
            settings: Where the policy and the audit store are.
            holder: The policy holder to use; by default one loading ``policy.source``:
                the files of ``policy.dir``, or the newest stored policy that loads
                from a PostgreSQL store (the newer ones it skipped are recorded as
                ``policy_rejected`` events).

        Raises:
            PolicyLoadError: the policy has errors; the guard must not start.
            ConfigError: an unknown ``policy.source``, or a store with no policy that loads.
        """
        from guard.policy._holder import holder_for

        start: StartPolicy | None = None
        if holder is None:
            holder, start = holder_for(settings.policy)
        from guard.rights import Register

        trail = JournalTrail(settings.audit)
        register: Register | None = None
        try:
            hmac_key = load_hmac_key(settings.audit.hmac_key, create=True)
            register = Register.open(settings.audit.store, hmac_key, watch=True)
            guard = cls(holder, trail, hmac_key=hmac_key, register=register)
            guard.refusals = RefusalBudget.for_audit(settings.audit, guard._count_refusals)
        except BaseException:
            if register is not None:
                register.close()
            trail.close()
            raise
        guard.record_policy_event(EventKind.POLICY_LOADED, holder.current.version,
                                  "policy in force at start")
        if start is not None:
            for skipped in start.skipped:
                guard.record_policy_event(
                    EventKind.POLICY_REJECTED, holder.current.version,
                    f"stored policy #{skipped.id} ({skipped.version}) skipped at start: "
                    f"{skipped.error}; started on #{start.id}")
        holder.on_reload(guard._on_reload)
        return guard

    def _on_reload(self, result: ReloadResult) -> None:
        if result.ok:
            if result.changed:
                self.record_policy_event(EventKind.POLICY_LOADED, result.version,
                                         f"replaced {result.previous_version}")
        else:
            self.record_policy_event(EventKind.POLICY_REJECTED, result.previous_version,
                                     result.error)

    # -- decisions ---------------------------------------------------------------------------

    def _version(self) -> str:
        try:
            return self.holder.current.version
        except Exception:
            return ""

    def _unrecorded(self, request: Request, decision: Decision) -> Decision:
        refused = denial(Reason.AUDIT_UNAVAILABLE, request, decision.policy_version)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(decision_attributes(refused))
        return refused

    # -- recording: fields to the journal's writer ---------------------------------------------

    def _record(self, kind: EventKind, fields: dict[str, Any]) -> str:
        """Record the event ``fields`` describe; its id once durable."""
        return self.trail.record_fields(kind, fields)

    async def _arecord(self, kind: EventKind, fields: dict[str, Any]) -> str:
        """Record an event; its id once durable.

        Raises:
            TimeoutError: not durable within :attr:`durable_within` seconds (a hung
                store): the caller refuses the request rather than wait for good.
        """
        future = self.trail.start_fields(kind, fields)
        self._watch(future, Watched(future))
        return await future

    def _watch(self, future: asyncio.Future[str], entry: Handed | Watched) -> None:
        """Fail ``future`` with TimeoutError unless it is done within :attr:`durable_within`.

        Args:
            future: The commit's future.
            entry: What the watch holds: a decision's fields (a refusal for want of time
                queues the decision's 403 outcome, :meth:`_late_refusal`) or a :class:`Watched`.
        """
        deadlines = self._deadlines
        loop = future.get_loop()
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._deadlines = Deadlines(loop, self._late_refusal)
        deadlines.watch(entry, self.durable_within)

    def _post(self, kind: EventKind, fields: dict[str, Any]) -> None:
        self.trail.post_fields(kind, fields)

    # -- decisions ---------------------------------------------------------------------------

    def decide(
        self, request: Request, http: HttpContext | None = None, *, per_category: bool = False,
        current: trace.Span | None = None,
    ) -> Ruling:
        """Decide now; record the decision later with :meth:`acommit` (or :meth:`post`).

        Lets an enforcement point record one event per request with the status it
        answers with: no data may leave before :meth:`acommit` returned an allowing
        decision. Never raises for a request.

        Args:
            request: The request to decide.
            http: The HTTP side (method, route template, ...).
            per_category: Judge category by category (a minimising route): the
                decision allows when a personal category is released, and the event's
                ``detail`` lists the categories released and withheld with the reason
                for each (``{"released":[...],"withheld":{"financial":"..."}}``).
            current: The current span, when the caller has read it already (it is
                not looked up again).
        """
        tracer = self._tracer
        if makes_no_span(tracer):  # the current span is read once, for its ids
            current = current if current is not None else trace.get_current_span()
            return self._ruling(request, http, per_category, None, current)
        span = tracer.start_span("guard.decision")
        if not span.is_recording():  # its parent's context: the same trace ids, no switch
            current = current if current is not None else trace.get_current_span()
            return self._ruling(request, http, per_category, None, current)
        with trace.use_span(span, end_on_exit=True):
            return self._ruling(request, http, per_category, span, span)

    def decide_asked(self, asked: Asked, current: trace.Span | None = None) -> Ruling:
        """:meth:`decide` of ``asked.request`` with ``asked.http`` (not per category).

        The same ruling; the decision is kept in ``asked`` for the policy in force, so a
        request asked again under it skips the memo's key (see :class:`Asked`). A request
        asked again with the policy it was decided under still in force, no span of the
        guard's own to make and no register entry for its subject is answered here, in
        one frame; anything else (or any error) goes the whole way, :meth:`_ruling`.

        Args:
            asked: The request, its HTTP side and their remembered decision.
            current: The current span, when the caller has read it already.
        """
        if not makes_no_span(self._tracer):
            return self.decide(asked.request, asked.http, current=current)
        if current is None:
            current = trace.get_current_span()
        start = perf_counter_ns()
        generation = self._decisions
        decided = asked.decided
        request = asked.request
        try:
            if (decided is not None and asked.generation == generation[2]
                    and self.holder.current is generation[0]):
                subject = request.subject
                register = self.register
                if subject is None or register is None or register.lookup(subject) is None:
                    fields = Handed(decided[1])
                    fields["subject_id"] = subject
                    fields["latency_us"] = (perf_counter_ns() - start) // 1000
                    if current is not INVALID_SPAN:
                        fields["trace_id"], fields["span_id"] = span_ids(
                            current.get_span_context())
                    return Ruling(decided[0], request, None, fields)
        except Exception:  # noqa: S110 - judged again the whole way, which fails closed
            pass
        return self._ruling(request, asked.http, False, None, current, asked)

    def _ruling(self, request: Request, http: HttpContext | None, per_category: bool,  # noqa: PLR0917
                span: trace.Span | None, traced: trace.Span, asked: Asked | None = None
                ) -> Ruling:
        """Decide; the event's fields carry the ids of ``traced`` (None for an invalid one).

        Args:
            request: The request.
            http: Its HTTP side.
            per_category: Judge category by category.
            span: The decision's span when it records (its attributes are set).
            traced: The span whose ids the event carries.
            asked: Where the request keeps its decision (:meth:`decide_asked`).
        """
        try:
            judged: CategoryDecision | None = None
            if per_category:
                decision, fields, judged = self._decide_per_category(request, http, span)
            else:  # decided, timed and given its fields here: one call less per request
                start = perf_counter_ns()
                remembered: dict[str, Any] | None = None
                try:  # the decision, and its event's fields when it is remembered
                    holder = self.holder
                    policy = holder.current
                    subject = request.subject
                    register = self.register
                    if (subject is not None and register is not None
                            and register.lookup(subject) is not None):
                        decision = holder.decide(request, register)  # decided every time
                    else:
                        generation = self._decisions
                        if generation[0] is not policy:  # a racing reader keeps its own pair
                            generation = self._decisions = (policy, {}, next(_generations))
                        if asked is not None and asked.generation == generation[2]:
                            decision, remembered = asked.decided  # type: ignore[misc]
                        else:
                            decision, remembered = self._remembered(generation, request, http,
                                                                    asked)
                except Exception:  # fail closed
                    decision = denial(Reason.INTERNAL_ERROR, request, self._version())
                latency_us = (perf_counter_ns() - start) // 1000
                if span is not None:
                    span.set_attributes(decision_attributes(decision))
                if remembered is None:
                    fields = Handed(_untraced(decision_fields(request, decision, http,
                                                              latency_us)))
                else:  # the event's own: its subject, timing, ids and status
                    fields = Handed(remembered)
                    fields["subject_id"] = request.subject
                    fields["latency_us"] = latency_us
            # The fields hold no trace ids (None, None); the API's invalid span has none
            # either, so a request without a span reads nothing more here.
            if traced is not INVALID_SPAN:
                fields["trace_id"], fields["span_id"] = span_ids(traced.get_span_context())
        except Exception:  # fail closed, unrecorded: no id an auditor could find
            return Ruling(denial(Reason.INTERNAL_ERROR, request, self._version()), request)
        return Ruling(decision, request, judged, fields)

    def _remembered(
        self, generation: tuple[CompiledPolicy | None, dict[tuple[object, ...], _Decided], int],
        request: Request, http: HttpContext | None, asked: Asked | None,
    ) -> tuple[Decision, dict[str, Any] | None]:
        """The decision of a request whose subject has no register entry, and its event's
        fields when they are remembered (else None).

        Without a register entry the decision depends only on the policy and the
        request's caller, purpose, categories, action and whether it names a subject
        (never on the subject itself, nor on the day), so it is remembered in the memo
        of the policy in force (``generation``: the policy, the memo, its number); a
        reload puts another policy in force, whose decisions start afresh. The register
        is asked on every request (by the caller), so a new entry applies at once.
        A request whose action is not an :class:`Action` (the plain string ``"read"``
        is equal to ``Action.READ`` as a key) is never remembered nor answered from the
        memo: it is decided afresh, as a fresh guard would (the engine refuses it).

        Args:
            generation: The policy in force, its memo and the memo's number.
            request: The request.
            http: Its HTTP side.
            asked: Where ``request`` and ``http`` (these very objects) keep their decision
                for the memo's policy (:meth:`decide_asked`); None: only the memo.
        """
        policy, cache, number = generation
        if request.action.__class__ is not Action:  # "read" == Action.READ: never its twin's
            return self.holder.decide(request, self.register), None
        key = (request.caller, request.purpose, request.categories, request.action,
               request.subject is None, http.method if http else None,
               http.route if http else None, http.status if http else None)
        try:
            hit = cache.get(key)
        except TypeError:  # a value that cannot be a key (a list of categories): not kept
            return self.holder.decide(request, self.register), None
        if hit is None:
            decision = decide(policy, request, None)  # type: ignore[arg-type]  # no entry
            hit = (decision, _untraced(decision_fields(request, decision, http)))
            if len(cache) >= _DECISION_CACHE:
                cache.clear()
            cache[key] = hit
        if asked is not None:
            asked.decided = hit
            asked.generation = number
        return hit

    def _decide_per_category(
        self, request: Request, http: HttpContext | None, span: trace.Span | None
    ) -> tuple[Decision, dict[str, Any], CategoryDecision]:
        start = time.perf_counter_ns()
        try:
            judged, detail = self._judge_categories(request)
        except Exception:  # fail closed: nothing is released
            judged = CategoryDecision(
                denial(Reason.INTERNAL_ERROR, request, self._version()), (),
                tuple((c, Reason.INTERNAL_ERROR) for c in request.categories))
            detail = judged.detail()
        latency_us = (time.perf_counter_ns() - start) // 1000
        decision = judged.decision
        if span is not None:
            span.set_attributes(decision_attributes(decision))
        fields = Handed(_untraced(decision_fields(request, decision, http, latency_us)))
        fields["detail"] = detail
        return decision, fields, judged

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked:
        """Durably record a decision :meth:`decide` made; commit each ruling once.

        Args:
            ruling: The decision and its event.
            status: The HTTP status the request is answered with (the event's
                ``http_status``); None when it is not known yet (a ``write`` decision,
                recorded before its handler runs).

        Returns:
            The decision and its event id; a decision that cannot be made durable
            within :attr:`durable_within` is an ``audit_unavailable`` denial with no id.
            Never raises for a request.
        """
        if ruling.fields is None:
            return Checked(ruling.decision, "", ruling.categories)
        try:
            event_id = await self.begin_commit(ruling, status)
        except asyncio.CancelledError:  # the decision stays queued: say nothing was answered
            self.abandon(ruling)
            raise
        except Exception:  # AuditUnavailableError, TimeoutError or anything else: fail closed
            return Checked(self._unrecorded(ruling.request, ruling.decision), "")
        return Checked(ruling.decision, event_id, ruling.categories)

    def abandon(self, ruling: Ruling) -> bool:
        """Say that nothing was answered from a committed decision whose commit was not awaited.

        For an enforcement point whose wait for the commit ended (its task was
        cancelled) before the decision was durable: the decision stays queued and
        may be written with the status it was committed with, so an ``outcome``
        with ``detail`` = ``aborted`` and that status is queued behind it, naming
        it (as a refusal for want of time does). Nothing is queued for a decision
        not handed to the writer, or committed with no status (a write before its
        handler: its outcome follows the handler). False if nothing was queued.
        """
        fields = ruling.fields
        if not ruling.queued or fields is None or fields.get("http_status") is None:
            return False
        outcome = self._answer(fields, fields["http_status"])
        if outcome is None:
            return False
        outcome["detail"] = OUTCOME_ABORTED
        try:
            self._post(EventKind.OUTCOME, outcome)
        except Exception:
            _log.exception("could not queue the outcome of an abandoned commit")
            return False
        return True

    def _answer(self, fields: dict[str, Any], status: int) -> dict[str, Any] | None:
        """The outcome fields answering a queued decision with ``status`` (None: no id to name).

        The decision's id is the one the writer set in its fields when it built the
        event, or, not built yet, one set here first that the writer then takes.
        """
        decision_id = fields.get("event_id") or fields.setdefault("event_id", new_event_id())
        if not decision_id:  # an explicit None: the writer used an id of its own
            _log.error("an outcome of a queued decision cannot name it")
            return None
        return outcome_fields(decision_id, status, HttpContext(
            fields.get("http_method") or "", fields.get("http_route") or ""))

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        """Queue a decision :meth:`decide` made, with ``status``, and return at once.

        For an enforcement point on an event loop that lets the app finish while the
        event is committed: no data may leave before the future resolved with an id.
        Commit each ruling once (this, :meth:`acommit`, :meth:`commit` or :meth:`post`).

        Args:
            ruling: The decision and its event.
            status: The HTTP status the request is answered with (``http_status``).

        Returns:
            A future of the loop that resolves with the event's id once it is durable,
            or fails: AuditUnavailableError (not recordable, the journal refused it) or
            TimeoutError (not durable within :attr:`durable_within`; the request is
            refused ``audit_unavailable``). On that timeout an ``outcome`` event with
            status 403 and ``detail`` = ``audit_unavailable`` is queued behind the
            decision, so should the journal write the decision after all, the trail
            says what the client got. The refusal names the id the event is written
            with (``ruling.fields["event_id"]``: set by the journal's writer when it
            builds the event, or by the refusal if the writer has not taken it yet).
        """
        try:
            if ruling.queued:  # a second commit would write the decision twice
                raise AuditUnavailableError("the decision is committed already")
            fields = ruling.fields  # _with_status and _handed, inline: once per read
            if fields is None:
                raise AuditUnavailableError("the decision cannot be recorded")
            if status is not None:
                fields["http_status"] = status
            if type(fields) is not Handed or "trace_id" not in fields:  # not made by decide()
                fields = ruling.fields = _handed(fields)
            future = self._hand(fields)  # the writer's entry (they carry their trace ids)
            ruling.queued = True
        except Exception as exc:  # a closed trail, a full disk: refused now
            refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            refused.set_exception(exc)
            return refused
        self._watch(future, fields)
        return future

    def _late_refusal(self, fields: dict[str, Any]) -> None:
        """Queue the 403 that answers a decision not durable by its deadline.

        Queued behind the decision: if the journal writes the decision after all,
        this outcome follows it, so the trail says the client was refused.

        Args:
            fields: The decision's fields, handed to the journal's writer as they are.
        """
        outcome = self._answer(fields, 403)
        if outcome is None:
            return
        decision_id = outcome["decision_ref"]
        outcome["detail"] = LATE_REFUSAL
        try:
            self._post(EventKind.OUTCOME, outcome)
        except Exception:
            _log.exception("could not queue the refusal of decision %s, durable after its "
                           "deadline", decision_id)
            return
        _log.error("decision %s was not durable by its deadline: refused, and the refusal "
                   "(403) is queued as its outcome", decision_id)

    def commit(self, ruling: Ruling, status: int | None = None) -> Checked:
        """Like :meth:`acommit`, blocking until the event is durable (off an event loop)."""
        if ruling.queued:  # a second commit would write the decision twice
            return Checked(self._unrecorded(ruling.request, ruling.decision), "")
        fields = _with_status(ruling, status)
        if fields is None:
            return Checked(ruling.decision, "", ruling.categories)
        try:
            fields = ruling.fields = _handed(fields)
            event_id = self.trail.record_fields(EventKind.DECISION, fields, self.durable_within)
            ruling.queued = True
        except AuditTimeoutError:  # refused for want of time: the journal may write it yet
            ruling.queued = True
            self._late_refusal(fields)
            return Checked(self._unrecorded(ruling.request, ruling.decision), "")
        except Exception:  # fail closed
            return Checked(self._unrecorded(ruling.request, ruling.decision), "")
        return Checked(ruling.decision, event_id, ruling.categories)

    def post(self, ruling: Ruling, status: int) -> bool:
        """Queue a decision that released no data for the next commit, without waiting.

        For a request that ended before its response started (the handler raised):
        nothing left, so nothing waits for the record. False if it could not be queued;
        True, and nothing more is queued, for a ruling already handed to the writer (a
        commit that was cancelled: the decision stays queued).
        """
        if ruling.queued:
            return True
        fields = _with_status(ruling, status)
        if fields is None:
            return False
        try:
            self._post(EventKind.DECISION, fields)
        except Exception:
            return False
        ruling.queued = True
        return True

    def check(self, request: Request, http: HttpContext | None = None) -> Checked:
        """Decide and durably record; a decision that cannot be recorded is a denial.

        Never raises for a request.
        """
        return self.commit(self.decide(request, http))

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked:
        """Like :meth:`check`; awaits the durable write without blocking the loop."""
        return await self.acommit(self.decide(request, http))

    def _judge_categories(self, request: Request) -> tuple[CategoryDecision, str]:
        """``decide_categories`` and its audit detail, remembered while the register is silent.

        Without a register entry for the subject the judgement depends only on the
        policy (its version) and the request's caller, purpose, action, categories and
        whether it names a subject, so repeated requests reuse it.
        """
        policy = self.holder.current
        register = self.register
        subject = request.subject
        if subject is not None and register is not None and register.lookup(subject) is not None:
            judged = decide_categories(policy, request, register)
            return judged, judged.detail()
        if request.action.__class__ is not Action:  # "read" == Action.READ: never its twin's
            judged = decide_categories(policy, request, register)
            return judged, judged.detail()
        key = (policy.version, request.caller, request.purpose, request.action,
               request.categories, subject is None)
        cache = self._category_cache
        hit = cache.get(key)
        if hit is None:
            judged = decide_categories(policy, request, None)
            hit = (judged, judged.detail())
            if len(cache) >= _CATEGORY_CACHE:
                cache.clear()
            cache[key] = hit
        return hit

    def _denial_fields(
        self, request: Request, decision: Decision, http: HttpContext | None,
        detail: str | None = None,
    ) -> dict[str, Any]:
        if decision.allowed:
            raise ValueError("record_denial takes denials only; decide with check()")
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(decision_attributes(decision))
        fields = decision_fields(request, decision, http)
        if detail is not None:
            fields["detail"] = detail
        return fields

    def record_denial(
        self, request: Request, decision: Decision, http: HttpContext | None = None
    ) -> Checked:
        """Durably record a denial the enforcement point made before the engine ran.

        For refusals such as an unauthenticated caller (401), an undeclared route or a
        malformed purpose: the event has the same shape as one :meth:`check` writes.
        If it cannot be recorded the denial stands and ``decision_id`` is ``""``.

        Raises:
            ValueError: ``decision`` allows the request.
        """
        fields = self._denial_fields(request, decision, http)
        try:
            return Checked(decision, self._record(EventKind.DECISION, fields))
        except Exception:  # the request is refused either way; no id an auditor could find
            return Checked(decision, "")

    async def arecord_denial(
        self, request: Request, decision: Decision, http: HttpContext | None = None,
        *, detail: str | None = None, source: str | None = None,
    ) -> Checked:
        """Like :meth:`record_denial` without blocking the event loop.

        ``detail`` is the event's ``detail`` (e.g. ``peer:<address>``: who asserted a
        refused caller header). ``source``: the client's address, for a request that
        proves no caller: past :attr:`refusals`' bound the refusal is counted in a
        ``refusals`` event instead (``decision_id`` ``""``).
        """
        if (source is not None and not request.caller and self.refusals is not None
                and not self.refusals.admit(source_of(source), decision.reason.value,
                                            http.route if http is not None else "")):
            return Checked(decision, "")
        fields = self._denial_fields(request, decision, http, detail)
        try:
            return Checked(decision, await self._arecord(EventKind.DECISION, fields))
        except Exception:
            return Checked(decision, "")

    # -- outcomes and policy events ----------------------------------------------------------

    def record_outcome(
        self, decision_id: str, status: int, http: HttpContext | None = None
    ) -> bool:
        """Record the final HTTP status of an earlier decision; False if it could not be."""
        try:
            self._record(EventKind.OUTCOME, outcome_fields(decision_id, status, http))
        except AuditUnavailableError:
            return False
        return True

    async def arecord_outcome(
        self, decision_id: str, status: int, http: HttpContext | None = None
    ) -> bool:
        """Like :meth:`record_outcome` without blocking the loop."""
        try:
            await self._arecord(EventKind.OUTCOME, outcome_fields(decision_id, status, http))
        except (AuditUnavailableError, TimeoutError):
            return False
        return True

    def enqueue_outcome(
        self, decision_id: str, status: int, http: HttpContext | None = None
    ) -> bool:
        """Queue the outcome event for the next group commit without waiting for it.

        For enforcement points on an event loop once the response is sent: the
        outcome does not gate data flow. A crash before the commit can lose an
        outcome, never a decision (decisions are durable before they are
        returned). False if the trail is closed.
        """
        try:
            self._post(EventKind.OUTCOME, outcome_fields(decision_id, status, http))
        except AuditUnavailableError:
            return False
        return True

    def record_policy_event(
        self, kind: EventKind | str, version: str, detail: str | None = None
    ) -> bool:
        """Record that a policy was loaded or rejected; False if it could not be."""
        kind = EventKind(kind)
        try:
            self._record(kind, policy_fields(kind, version, detail))
        except AuditUnavailableError:
            return False
        return True

    def record_decisions(
        self,
        pairs: list[tuple[Request, Decision]],
        *,
        detail: str | None = None,
        http: HttpContext | None = None,
    ) -> list[bool]:
        """Durably record decisions made in bulk (``guard subject filter``); per pair, durable?

        Args:
            pairs: Requests and the decisions made for them.
            detail: Text every event carries (e.g. ``batch:ID``).
            http: The HTTP side, when an endpoint asked.
        """
        fields = []
        for request, decision in pairs:
            one = decision_fields(request, decision, http)
            one["detail"] = detail
            fields.append(one)
        return [event_id is not None
                for event_id in self.trail.record_many_fields(EventKind.DECISION, fields)]

    def record_subject_change(self, change: Change) -> Entry:
        """Record a change to the subject register: audited first, then stored and in force.

        Raises:
            RegisterRefusedError: the change is refused; nothing was recorded.
            AuditUnavailableError: the trail or the store could not take it.
            RuntimeError: this guard has no register.
        """
        if self.register is None:
            raise RuntimeError("this guard has no subject register")
        return self.register.record(change, self.holder.current, self._record)

    # -- life cycle --------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Is the guard able to decide and record? ``(ok, why)`` for health checks."""
        return self.trail.ready()

    def _count_refusals(self, fields: dict[str, Any]) -> None:
        """Queue a ``refusals`` summary (:class:`RefusalBudget`); logged if it cannot be."""
        fields["policy_version"] = self._version()
        try:
            self._post(EventKind.REFUSALS, fields)
        except Exception:
            _log.exception("could not record the count of refusals: %s", fields["detail"])

    def close(self) -> None:
        """Flush and close the audit trail (writes the closing checkpoint) and the register."""
        if self.refusals is not None:
            self.refusals.flush()
        if self.register is not None:
            self.register.close()
        self.trail.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _untraced(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with no trace ids yet (:meth:`Guard.decide` sets them when there is a span).

    The same dict, not a copy: a plain ``dict`` is what :class:`Handed` copies fastest.
    """
    fields["trace_id"] = fields["span_id"] = None
    return fields


def _handed(fields: dict[str, Any]) -> Handed:
    """A decision's fields as the journal's writer takes them: :class:`Handed` with trace ids.

    :meth:`Guard.decide` makes them so; a ruling made otherwise is given them here
    (the current span's ids), so that the trail hands these very fields to the
    writer (it copies fields without ids) and a refusal for want of time can read
    the id the writer set in them.
    """
    if type(fields) is Handed and "trace_id" in fields:
        return fields
    handed = Handed(fields)
    if "trace_id" not in handed:
        handed["trace_id"], handed["span_id"] = span_ids(
            trace.get_current_span().get_span_context())
    return handed


def _with_status(ruling: Ruling, status: int | None) -> dict[str, Any] | None:
    """The ruling's event fields with the HTTP status answered (if known); None: unrecordable."""
    fields = ruling.fields
    if fields is not None and status is not None:
        fields["http_status"] = status
    return fields
