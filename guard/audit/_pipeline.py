"""Building audit events through a structlog processor chain.

Processors are plain structlog callables ``(logger, method_name, event_dict)``;
each does one thing: stamp an id and time, add the OpenTelemetry trace ids,
replace the raw subject id with its keyed pseudonym, and build the
:class:`AuditEvent`. The trail's writer then links the event into its hash
chain (:func:`link`) and renders it as canonical JSON (:func:`render_json`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any

from opentelemetry import trace

from guard._types import Decision, HttpContext, Request
from guard.audit._event import AuditEvent, EventKind
from guard.audit._ids import new_event_id
from guard.audit._keys import pseudonymise

EventDict = MutableMapping[str, Any]

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Every ``ts`` has this fixed width, so timestamps sort as strings."""


_second: tuple[int, str] = (-1, "")  # (epoch second, its formatted prefix), shared by threads


def utc_now() -> str:
    """The current UTC time in :data:`TS_FORMAT` (the date part is formatted once a second)."""
    global _second  # noqa: PLW0603 - a one-entry cache; a tuple swap is atomic
    micros = time.time_ns() // 1000
    sec, frac = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{frac:06d}Z"


def ts_epoch(ts: str) -> float:
    """An event's timestamp in seconds since the epoch (now, if it cannot be read)."""
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return time.time()


def stamp(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """Move structlog's ``event`` to ``kind``; add ``event_id`` and ``ts`` when absent."""
    kind = event_dict.pop("event")
    # An EventKind passes as is: calling the Enum is slow, and this runs per request.
    event_dict["kind"] = kind if type(kind) is EventKind else EventKind(kind)
    if not event_dict.get("event_id"):
        event_dict["event_id"] = new_event_id()
    if not event_dict.get("ts"):
        event_dict["ts"] = utc_now()
    return event_dict


class TraceContext:
    """Add ``trace_id`` and ``span_id`` of the current OpenTelemetry span, if there is one."""

    __slots__ = ()

    def __call__(self, _logger: object, _method: str, event_dict: EventDict) -> EventDict:
        for name, value in trace_fields().items():
            event_dict.setdefault(name, value)
        return event_dict


class Pseudonymise:
    """Replace ``subject_id`` (raw) with ``subject``, its keyed HMAC-SHA256 pseudonym.

    Args:
        key: The HMAC key; without it no one can link a pseudonym to a person.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, _logger: object, _method: str, event_dict: EventDict) -> EventDict:
        raw = event_dict.pop("subject_id", None)
        if raw is not None:
            event_dict["subject"] = pseudonymise(self._key, raw)
        return event_dict


def build_event(_logger: object, _method: str, event_dict: EventDict) -> dict[str, Any]:
    """Final processor: hand the finished :class:`AuditEvent` to the sink."""
    return {"event": AuditEvent(**event_dict)}


Processor = Callable[[object, str, EventDict], EventDict]


def link(event: AuditEvent, writer_id: str, seq: int, prev_hash: str) -> AuditEvent:
    """Chain processor: place ``event`` after ``prev_hash`` in ``writer_id``'s chain."""
    return event.linked(writer_id, seq, prev_hash)


def render_json(event: AuditEvent) -> str:
    """Render a linked event as one line of canonical JSON (``hash`` included)."""
    return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


class AuditPipeline:
    """Build decision, outcome and policy events; raw subject ids never leave here.

    Args:
        hmac_key: The key for subject pseudonyms.
    """

    def __init__(self, hmac_key: bytes, *, trace_context: bool = True) -> None:
        # Without trace_context the fields carry the trace ids themselves.
        traced: tuple[Processor, ...] = (TraceContext(),) if trace_context else ()
        self.processors: tuple[Processor, ...] = (
            stamp, *traced, Pseudonymise(hmac_key), build_event)

    def event(self, kind: EventKind, **fields: Any) -> AuditEvent:
        """Run the processors over ``fields`` and return the (unlinked) event.

        The chain is run directly, as structlog runs it, without a bound logger
        around it: this is on every request's path.
        """
        event_dict: EventDict = fields
        event_dict["event"] = kind
        for processor in self.processors:
            event_dict = processor(None, "info", event_dict)
        event: AuditEvent = event_dict["event"]
        return event

    def decision(
        self,
        request: Request,
        decision: Decision,
        http: HttpContext | None = None,
        latency_us: int | None = None,
    ) -> AuditEvent:
        """The event for one decision."""
        fields = decision_fields(request, decision, http, latency_us)
        return self.event(EventKind.DECISION, **fields)

    def outcome(self, decision_id: str, status: int, http: HttpContext | None) -> AuditEvent:
        """The event for the final HTTP status of an earlier decision."""
        return self.event(EventKind.OUTCOME, **outcome_fields(decision_id, status, http))

    def policy(self, kind: EventKind, version: str, detail: str | None) -> AuditEvent:
        """The event for a policy that was loaded or rejected."""
        return self.event(kind, **policy_fields(kind, version, detail))


def decision_fields(
    request: Request,
    decision: Decision,
    http: HttpContext | None = None,
    latency_us: int | None = None,
) -> dict[str, Any]:
    """The fields of a decision event, before the processors (raw ``subject_id``)."""
    return {
        "caller": decision.caller or request.caller,
        "party_type": decision.party_type,
        "country": decision.country,
        "purpose": decision.purpose or request.purpose,
        "categories": tuple(decision.categories or request.categories),
        "action": (decision.action or request.action).value,
        "allowed": decision.allowed,
        "reason": decision.reason.value,
        "rule": tuple(decision.rule),
        "lawful_basis": tuple(decision.lawful_basis),
        "policy_version": decision.policy_version,
        "subject_id": request.subject,
        "http_method": http.method if http else None,
        "http_route": http.route if http else None,
        "http_status": http.status if http else None,
        "latency_us": latency_us,
    }


OUTCOME_ABORTED = "aborted"
"""``detail`` of an outcome whose response was cut short after its status was sent."""


def outcome_fields(decision_id: str, status: int, http: HttpContext | None) -> dict[str, Any]:
    """The fields of the event for the final HTTP status of an earlier decision.

    ``http.aborted`` (the response broke off mid-body), or ``http.extra["aborted"]``,
    sets ``detail`` to ``aborted``; ``http_status`` stays the status the client was sent.
    """
    fields: dict[str, Any] = {
        "decision_ref": decision_id,
        "http_method": http.method if http else None,
        "http_route": http.route if http else None,
        "http_status": status,
    }
    if http is not None and (http.aborted or http.extra.get("aborted")):
        fields["detail"] = OUTCOME_ABORTED
    return fields


def policy_fields(kind: EventKind, version: str, detail: str | None) -> dict[str, Any]:
    """The fields of a policy event.

    Raises:
        ValueError: ``kind`` is not a policy event kind.
    """
    if kind not in (EventKind.POLICY_LOADED, EventKind.POLICY_REJECTED):
        raise ValueError(f"not a policy event kind: {kind}")
    return {"policy_version": version, "detail": detail}


def trace_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span (empty without one)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
