"""Shared helpers of the subject-register tests: a register in memory, requests per purpose."""

from __future__ import annotations

from datetime import date
from typing import Any

from guard._types import Action, Decision, Request
from guard.audit import EventKind
from guard.engine import decide
from guard.policy import CompiledPolicy
from guard.rights import Change, Entry, EntryKind, Register

KEY = b"r" * 32
SUBJECT = "customer-42"

# For each declarable purpose: a caller and a category the shipped policy allows
# without a subject, so that only the register can refuse.
GRANTED: dict[str, tuple[str, str]] = {
    "customer.registration": ("svc:web", "identity"),
    "order.processing": ("svc:billing", "identity"),
    "order.processing.payments": ("svc:checkout", "identity"),
    "order.processing.debt_recovery": ("proc:debtco", "identity"),
    "relationship.management": ("svc:crm", "identity"),
    "promotion.prize_draw": ("svc:crm", "identity"),
    "business.administration": ("svc:web", "technical"),
    "marketing.advertising": ("svc:marketing", "identity"),
    "marketing.recommendations": ("svc:marketing", "identity"),
    "marketing.third_party": ("svc:marketing", "identity"),
    "analytics.improvement": ("svc:analytics", "technical"),
    "legal.compliance": ("svc:billing", "identity"),
    "rights.request": ("svc:support", "identity"),
}


class Events:
    """Stands in for the audit trail: keeps the fields of every register event."""

    def __init__(self) -> None:
        self.fields: list[dict[str, Any]] = []

    def __call__(self, kind: EventKind, fields: dict[str, Any]) -> str:
        assert kind is EventKind.SUBJECT_RIGHT
        self.fields.append(fields)
        return f"event-{len(self.fields)}"


def record(
    register: Register,
    policy: CompiledPolicy,
    kind: EntryKind,
    purpose: str = "",
    *,
    on: date | None = None,
    ref: str = "",
    subject: str = SUBJECT,
) -> Entry:
    """Record one change for ``subject`` (refusals raise)."""
    return register.record(Change(subject, kind, purpose, on, ref, "test"), policy, Events())


def ask(
    policy: CompiledPolicy,
    register: Register | None,
    purpose: str,
    *,
    aggregated: bool = False,
    today: date | None = None,
    subject: str | None = SUBJECT,
) -> Decision:
    """Decide the granted request of ``purpose`` for ``subject``."""
    caller, category = GRANTED[purpose]
    request = Request(caller, purpose, ("aggregated",) if aggregated else (category,),
                      Action.READ, subject)
    return decide(policy, request, register, today=today)
