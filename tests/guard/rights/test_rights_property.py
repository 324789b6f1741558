"""For random sequences of register changes, decisions equal a plain reading of POLICY-SPEC §4.

The reference below is written from the spec's table, not from the engine: it keeps
every accepted entry in a list and, for each question, looks back through the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rightskit import GRANTED, KEY, SUBJECT, Events

from guard._types import Reason
from guard.policy import CompiledPolicy, load_policy
from guard.rights import Change, EntryKind, Register, RegisterRefusedError

K = EntryKind
POLICY = load_policy(None)
NODES = sorted(POLICY.purposes)  # every purpose and grouping node
BITING = ["marketing", "marketing.third_party", "marketing.advertising", "order",
          "order.processing.debt_recovery", "analytics", "analytics.improvement"]
EXEMPT = {"legal.compliance", "rights.request"}
SURVIVES = {"legal.compliance": 6, "order.processing.debt_recovery": 6, "rights.request": None}


@dataclass(frozen=True)
class Step:
    kind: EntryKind
    purpose: str
    on: date | None
    ref: str


def ancestors(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def six_years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return date(day.year + years, 2, 28)


def reference(entries: list[Step], purpose: str, personal: bool, today: date) -> Reason:
    """POLICY-SPEC §3 checks 9-13 read straight off the list of accepted entries."""
    bases = set(POLICY.purposes[purpose].bases)
    chain = ancestors(purpose)
    if bases == {"consent"}:
        consents = [e for e in entries if e.kind in (K.CONSENT_GRANTED, K.CONSENT_WITHDRAWN)
                    and e.purpose in chain]
        if not consents or consents[-1].kind is not K.CONSENT_GRANTED:
            return Reason.CONSENT_REQUIRED
    if not personal:
        return Reason.ALLOWED
    ends = [e for e in entries if e.kind is K.END_OF_RELATIONSHIP]
    if ends and ends[-1].on is not None and ends[-1].on <= today:
        node = next((a for a in chain if a in SURVIVES), None)
        if node is None:
            return Reason.RETENTION_EXPIRED
        years = SURVIVES[node]
        if years is not None and today >= six_years_after(ends[-1].on, years):
            return Reason.RETENTION_EXPIRED
    exempt = any(a in EXEMPT for a in chain)
    for asked, answered, reason in (
        (K.ERASURE_REQUESTED, K.ERASURE_REFUSED, Reason.ERASURE_REQUESTED),
        (K.RESTRICTION, K.RESTRICTION_LIFTED, Reason.PROCESSING_RESTRICTED),
    ):
        latest = [e for e in entries if e.kind in (asked, answered)]
        if latest and latest[-1].kind is asked and not exempt:
            return reason
    objectable = chain[-1] == "marketing" or bases <= {"legitimate_interest", "public_task"}
    if objectable:
        for node in chain:
            latest = [e for e in entries if e.kind in (K.OBJECTION, K.OBJECTION_OVERRIDDEN)
                      and e.purpose == node]
            if latest and latest[-1].kind is K.OBJECTION:
                return Reason.OBJECTION_RECORDED
    return Reason.ALLOWED


days = st.dates(min_value=date(2015, 1, 1), max_value=date(2035, 12, 31))


@st.composite
def steps(draw: st.DrawFn) -> Step:
    kind = draw(st.sampled_from(list(EntryKind)))
    # Mostly nodes where consents and objections bite, so overrides get accepted too.
    purpose = draw(st.one_of(st.sampled_from(BITING), st.sampled_from(NODES))) \
        if kind.names_purpose else ""
    on = draw(days) if kind is K.END_OF_RELATIONSHIP else None
    ref = draw(st.sampled_from(["", "T-1", "T-2"]))
    return Step(kind, purpose, on, ref)


def accepted(register: Register, policy: CompiledPolicy, step: Step) -> bool:
    try:
        register.record(Change(SUBJECT, step.kind, step.purpose, step.on, step.ref, "p"),
                        policy, Events())
    except RegisterRefusedError:
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps(), max_size=14), st.lists(days, min_size=1, max_size=3))
def test_decisions_equal_the_reference(changes: list[Step], todays: list[date]) -> None:
    from rightskit import ask

    register = Register(KEY)
    kept: list[Step] = []
    for step in changes:
        if accepted(register, POLICY, step):
            kept.append(step)
    event("an override accepted" if any(s.kind is K.OBJECTION_OVERRIDDEN for s in kept)
          else "no override accepted")
    for today in todays:
        for purpose in GRANTED:
            for aggregated in (False, True):
                expected = reference(kept, purpose, not aggregated, today)
                decision = ask(POLICY, register, purpose, aggregated=aggregated, today=today)
                assert decision.reason is expected, (purpose, aggregated, today, kept)
                assert decision.allowed is (expected is Reason.ALLOWED)


@pytest.mark.parametrize("subject", [None, "nobody"])
def test_reference_agrees_for_a_subject_without_entries(subject: str | None) -> None:
    from rightskit import ask

    register = Register(KEY)
    for purpose in GRANTED:
        expected = reference([], purpose, True, date(2026, 1, 1))
        assert ask(POLICY, register, purpose, subject=subject).reason is expected
