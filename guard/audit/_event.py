"""The audit event: one record per decision, outcome or policy change."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from guard._types import Decision, HttpContext, Request

GENESIS_HASH = "0" * 64  # ``prev_hash`` of the first event of every chain
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so timestamps sort as strings

_second: tuple[int, str] = (-1, "")  # (epoch second, its formatted prefix), shared by threads


def utc_now() -> str:
    """The current UTC time in :data:`TS_FORMAT` (the date part is formatted once a second)."""
    global _second  # noqa: PLW0603 - a one-entry cache; a tuple swap is atomic
    sec, frac = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{frac:06d}Z"


def ts_epoch(ts: str) -> float | None:
    """An event's timestamp in seconds since the epoch (None if it cannot be read)."""
    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


class EventKind(StrEnum):
    """What an audit event records."""

    DECISION = "decision"
    OUTCOME = "outcome"
    POLICY_LOADED = "policy_loaded"
    POLICY_REJECTED = "policy_rejected"
    SUBJECT_RIGHT = "subject_right"  # a change to the subject register
    HEARTBEAT = "heartbeat"  # a readiness probe: the trail still makes events durable
    REFUSALS = "refusals"  # refusals proving no caller, counted rather than recorded one by one


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record as stored (``docs/audit.md`` documents every field)."""

    event_id: str
    kind: EventKind
    ts: str
    caller: str = ""
    party_type: str | None = None
    country: str | None = None
    purpose: str = ""
    categories: tuple[str, ...] = ()
    action: str = ""
    allowed: bool | None = None
    reason: str = ""
    rule: tuple[str, ...] = ()
    lawful_basis: tuple[str, ...] = ()
    policy_version: str = ""
    subject: str | None = None
    http_method: str | None = None
    http_route: str | None = None
    http_status: int | None = None
    trace_id: str | None = None
    span_id: str | None = None
    latency_us: int | None = None
    decision_ref: str | None = None
    detail: str | None = None
    writer_id: str = ""
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (tuples become lists)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIELD_NAMES}
        out["kind"] = self.kind.value
        out["categories"] = list(self.categories)
        out["rule"] = list(self.rule)
        out["lawful_basis"] = list(self.lawful_basis)
        return out


def decision_fields(
    request: Request,
    decision: Decision,
    http: HttpContext | None = None,
    latency_us: int | None = None,
) -> dict[str, Any]:
    """The fields of a decision event (with the raw ``subject_id``, pseudonymised by the writer)."""
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


OUTCOME_ABORTED = "aborted"  # ``detail`` of an outcome whose response broke off mid-body


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


MAX_POLICY_DETAIL = 4096  # characters of a policy event's ``detail``; a longer one is cut


def policy_fields(kind: EventKind, version: str, detail: str | None) -> dict[str, Any]:
    """The fields of a policy event (ValueError: ``kind`` is not a policy event kind)."""
    if kind not in (EventKind.POLICY_LOADED, EventKind.POLICY_REJECTED):
        raise ValueError(f"not a policy event kind: {kind}")
    if detail is not None and len(detail) > MAX_POLICY_DETAIL:  # an error may echo a whole value
        detail = detail[:MAX_POLICY_DETAIL - 1] + "…"
    return {"policy_version": version, "detail": detail}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AuditEvent))
