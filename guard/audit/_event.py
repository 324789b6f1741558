"""The audit event: one record per decision, outcome or policy change."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from guard._types import Decision, HttpContext, Request

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first event of every writer's chain."""


TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Every ``ts`` has this fixed width, so timestamps sort as strings."""

_second: tuple[int, str] = (-1, "")  # (epoch second, its formatted prefix), shared by threads


def utc_now() -> str:
    """The current UTC time in :data:`TS_FORMAT` (the date part is formatted once a second)."""
    global _second  # noqa: PLW0603 - a one-entry cache; a tuple swap is atomic
    sec, frac = divmod(time.time_ns() // 1000, 1_000_000)
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


class EventKind(StrEnum):
    """What an audit event records."""

    DECISION = "decision"
    OUTCOME = "outcome"
    POLICY_LOADED = "policy_loaded"
    POLICY_REJECTED = "policy_rejected"
    SUBJECT_RIGHT = "subject_right"
    """A change to the subject register (consent, objection, restriction, erasure, end)."""
    HEARTBEAT = "heartbeat"
    """A readiness probe: proves the trail still makes events durable (when idle)."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record; ``docs/audit.md`` documents every field.

    The chain fields (``writer_id``, ``seq``, ``prev_hash``, ``hash``) are empty
    until the trail's writer links the event into its chain.
    """

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


def render_json(event: AuditEvent) -> str:
    """An event as one line of JSON with sorted keys (``hash`` included), e.g. for a log shipper."""
    return orjson.dumps(event.to_dict(), option=orjson.OPT_SORT_KEYS).decode()


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


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AuditEvent))
TUPLE_FIELDS: tuple[str, ...] = ("categories", "rule", "lawful_basis")

_dumps_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_dumps_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def canonical_json(event: AuditEvent) -> bytes:
    """Every field but ``hash`` as canonical JSON: sorted keys, no spaces, ASCII.

    This is what a format-1 hash covered (see :func:`legacy_hash`).
    """
    data = event.to_dict()
    del data["hash"]
    return _dumps_canonical(data).encode()


def content_row(event: AuditEvent) -> tuple[Any, ...]:
    """The event's content as stored: every field but the chain fields, in field order.

    Tuples are compact JSON arrays (text), ``allowed`` is 1, 0 or null, ``kind``
    its value; the other fields are as they are.
    """
    return (
        event.event_id,
        event.kind.value,
        event.ts,
        event.caller,
        event.party_type,
        event.country,
        event.purpose,
        _dumps_compact(list(event.categories)),
        event.action,
        None if event.allowed is None else int(event.allowed),
        event.reason,
        _dumps_compact(list(event.rule)),
        _dumps_compact(list(event.lawful_basis)),
        event.policy_version,
        event.subject,
        event.http_method,
        event.http_route,
        event.http_status,
        event.trace_id,
        event.span_id,
        event.latency_us,
        event.decision_ref,
        event.detail,
    )


class ChainKey:
    """The secret that keys a format-3 chain: an HMAC-SHA256 key over each event's content.

    The store never holds it, so whoever can write to the store but lacks the key
    cannot re-hash an edited event, nor re-link a chain after deleting events.

    Args:
        key: The key bytes (see :func:`guard.audit.derive_chain_key`).
    """

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def digest(self, data: bytes) -> str:
        """HMAC-SHA256 (hex) of ``data`` under this key."""
        mac = self._base.copy()
        mac.update(data)
        return mac.hexdigest()


def content_digest(event: AuditEvent, key: ChainKey | None = None) -> str:
    """The digest of the event's :func:`content_row` as a compact JSON array (ASCII escapes).

    HMAC-SHA256 under ``key`` (format 3), or plain SHA-256 without one (format 2).
    """
    data = _dumps_compact(content_row(event)).encode()
    return key.digest(data) if key is not None else hashlib.sha256(data).hexdigest()


def chain_hash(writer_id: str, seq: int, prev_hash: str, digest: str, *, keyed: bool = False
               ) -> str:
    """An event's hash: SHA-256 (hex) of ``[tag,writer_id,seq,prev_hash,content_digest]``.

    ``tag`` is ``"v3"`` for a keyed chain (``digest`` is an HMAC), ``"v2"`` otherwise.
    The link is canonical JSON (an array, no spaces, ASCII), so no two different
    (writer, position, predecessor, content) tuples give the same bytes.
    """
    tag = "v3" if keyed else "v2"
    return hashlib.sha256(_dumps_compact([tag, writer_id, seq, prev_hash, digest]).encode()
                          ).hexdigest()


def compute_hash(event: AuditEvent, key: ChainKey | None = None) -> str:
    """The hash the event's chain fields and content call for (format 3 with ``key``, else 2)."""
    return chain_hash(event.writer_id, event.seq, event.prev_hash, content_digest(event, key),
                      keyed=key is not None)


def legacy_hash(event: AuditEvent) -> str:
    """Format 1 (events written before format 2): SHA-256 (hex) of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(event)).hexdigest()
