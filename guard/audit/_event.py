"""The audit event: one record per decision, outcome or policy change."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first event of every writer's chain."""


class EventKind(StrEnum):
    """What an audit event records."""

    DECISION = "decision"
    OUTCOME = "outcome"
    POLICY_LOADED = "policy_loaded"
    POLICY_REJECTED = "policy_rejected"


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditEvent:
        """Rebuild an event from :meth:`to_dict` output (or a stored row)."""
        values: dict[str, Any] = {name: data[name] for name in FIELD_NAMES if name in data}
        for name in TUPLE_FIELDS:
            if name in values:
                values[name] = tuple(values[name] or ())
        values["kind"] = EventKind(values["kind"])
        if values.get("allowed") is not None:
            values["allowed"] = bool(values["allowed"])
        return cls(**values)

    def linked(self, writer_id: str, seq: int, prev_hash: str) -> AuditEvent:
        """This event placed in a chain, with its hash computed."""
        data = self.to_dict()
        data["writer_id"], data["seq"], data["prev_hash"] = writer_id, seq, prev_hash
        del data["hash"]
        digest = hashlib.sha256(dumps_canonical(data).encode()).hexdigest()
        return replace(self, writer_id=writer_id, seq=seq, prev_hash=prev_hash, hash=digest)


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AuditEvent))
TUPLE_FIELDS: tuple[str, ...] = ("categories", "rule", "lawful_basis")


dumps_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def canonical_json(event: AuditEvent) -> bytes:
    """The bytes the hash covers: every field but ``hash``, sorted keys, no spaces, ASCII."""
    data = event.to_dict()
    del data["hash"]
    return dumps_canonical(data).encode()


def compute_hash(event: AuditEvent) -> str:
    """SHA-256 (hex) of the event's canonical JSON, which includes ``prev_hash``."""
    return hashlib.sha256(canonical_json(event)).hexdigest()
