"""POLICY-SPEC §4 and checks 9-13 of §3: every row, every new reason, their order."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from rightskit import GRANTED, KEY, SUBJECT, Events, ask, record

from guard._types import Action, Reason, Request
from guard.engine import decide, explain, utc_today
from guard.policy import CompiledPolicy, load_policy
from guard.rights import Change, EntryKind, Register, RegisterRefusedError

K = EntryKind


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    return load_policy(None)


@pytest.fixture
def register() -> Register:
    return Register(KEY)


# ---------------------------------------------------------------- 9. consent_required

def test_consent_only_purpose_without_subject_is_denied(policy: CompiledPolicy) -> None:
    decision = ask(policy, None, "marketing.third_party", subject=None)
    assert decision.reason is Reason.CONSENT_REQUIRED
    assert decision.rule == ("check:consent_required",)


def test_consent_only_purpose_for_a_subject_without_consent(
    policy: CompiledPolicy, register: Register
) -> None:
    assert ask(policy, register, "marketing.third_party").reason is Reason.CONSENT_REQUIRED


def test_consent_granted_allows_and_is_named_in_the_rule(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.CONSENT_GRANTED, "marketing.third_party", ref="web form 7")
    decision = ask(policy, register, "marketing.third_party")
    assert decision.allowed
    assert decision.rule[-1] == f"register:consent_granted:marketing.third_party:{utc_today()}"
    # Another subject has not consented.
    assert ask(policy, register, "marketing.third_party", subject="other").reason is \
        Reason.CONSENT_REQUIRED


def test_consent_withdrawn_denies_with_the_withdrawal_as_rule(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.CONSENT_GRANTED, "marketing.third_party")
    record(register, policy, K.CONSENT_WITHDRAWN, "marketing.third_party")
    decision = ask(policy, register, "marketing.third_party")
    assert decision.reason is Reason.CONSENT_REQUIRED
    assert decision.rule == (f"register:consent_withdrawn:marketing.third_party:{utc_today()}",)


def test_consent_on_a_grouping_node_covers_its_purposes(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.CONSENT_GRANTED, "marketing")
    assert ask(policy, register, "marketing.third_party").allowed
    # The latest consent entry for the purpose or an ancestor decides.
    record(register, policy, K.CONSENT_WITHDRAWN, "marketing.third_party")
    assert ask(policy, register, "marketing.third_party").reason is Reason.CONSENT_REQUIRED
    record(register, policy, K.CONSENT_GRANTED, "marketing")
    assert ask(policy, register, "marketing.third_party").allowed
    record(register, policy, K.CONSENT_WITHDRAWN, "marketing")
    assert ask(policy, register, "marketing.third_party").reason is Reason.CONSENT_REQUIRED


def test_consent_applies_to_aggregated_requests_too(
    policy: CompiledPolicy, register: Register
) -> None:
    assert ask(policy, register, "marketing.third_party", aggregated=True).reason is \
        Reason.CONSENT_REQUIRED


# ---------------------------------------------------------------- the order of 9-13

def test_checks_run_in_order_9_to_13(policy: CompiledPolicy, register: Register) -> None:
    past = date(2020, 1, 1)
    record(register, policy, K.OBJECTION, "marketing")
    record(register, policy, K.RESTRICTION)
    record(register, policy, K.ERASURE_REQUESTED)
    record(register, policy, K.END_OF_RELATIONSHIP, on=past)
    steps = [ask(policy, register, "marketing.third_party").reason]
    record(register, policy, K.CONSENT_GRANTED, "marketing.third_party")
    steps.append(ask(policy, register, "marketing.third_party").reason)
    record(register, policy, K.END_OF_RELATIONSHIP, on=date(2999, 1, 1))
    steps.append(ask(policy, register, "marketing.third_party").reason)
    record(register, policy, K.ERASURE_REFUSED, ref="tax records, HMRC")
    steps.append(ask(policy, register, "marketing.third_party").reason)
    record(register, policy, K.RESTRICTION_LIFTED)
    steps.append(ask(policy, register, "marketing.third_party").reason)
    assert steps == [Reason.CONSENT_REQUIRED, Reason.RETENTION_EXPIRED,
                     Reason.ERASURE_REQUESTED, Reason.PROCESSING_RESTRICTED,
                     Reason.OBJECTION_RECORDED]


def test_register_checks_come_after_the_policy_checks(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.RESTRICTION)
    request = Request("svc:analytics", "relationship.management", ("identity",), Action.READ,
                      SUBJECT)
    assert decide(policy, request, register).reason is Reason.PURPOSE_NOT_GRANTED


def test_explain_shows_each_register_check(policy: CompiledPolicy, register: Register) -> None:
    record(register, policy, K.OBJECTION, "marketing.advertising")
    caller, category = GRANTED["marketing.advertising"]
    request = Request(caller, "marketing.advertising", (category,), Action.READ, SUBJECT)
    decision, steps = explain(policy, request, register)
    checks = [(s.check, s.passed) for s in steps[-5:]]
    assert checks == [("consent_required", True), ("retention_expired", True),
                      ("erasure_requested", True), ("processing_restricted", True),
                      ("objection_recorded", False)]
    assert "register:objection:marketing.advertising" in steps[-1].looked_at
    assert decision.reason is Reason.OBJECTION_RECORDED


# ---------------------------------------------------------------- restriction and erasure

@pytest.mark.parametrize(("kind", "reason"), [(K.RESTRICTION, Reason.PROCESSING_RESTRICTED),
                                              (K.ERASURE_REQUESTED, Reason.ERASURE_REQUESTED)])
def test_restriction_and_erasure_stop_all_but_the_exempt_purposes(
    policy: CompiledPolicy, register: Register, kind: EntryKind, reason: Reason
) -> None:
    record(register, policy, kind)
    for purpose in GRANTED:
        decision = ask(policy, register, purpose)
        if purpose in ("legal.compliance", "rights.request"):
            assert decision.allowed, purpose
        elif purpose == "marketing.third_party":
            assert decision.reason is Reason.CONSENT_REQUIRED
        else:
            assert decision.reason is reason, purpose
            assert decision.rule == (f"register:{kind.value}:all:{utc_today()}",)


def test_lifted_restriction_allows_again(policy: CompiledPolicy, register: Register) -> None:
    record(register, policy, K.RESTRICTION)
    record(register, policy, K.RESTRICTION_LIFTED, ref="accuracy confirmed")
    assert ask(policy, register, "relationship.management").allowed


def test_refused_erasure_allows_again_and_needs_a_reason(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.ERASURE_REQUESTED)
    with pytest.raises(RegisterRefusedError, match="legal reason"):
        record(register, policy, K.ERASURE_REFUSED)
    assert ask(policy, register, "order.processing").reason is Reason.ERASURE_REQUESTED
    record(register, policy, K.ERASURE_REFUSED, ref="open dispute: legal claims")
    assert ask(policy, register, "order.processing").allowed
    record(register, policy, K.ERASURE_REQUESTED)  # asked again: in force again
    assert ask(policy, register, "order.processing").reason is Reason.ERASURE_REQUESTED


# ---------------------------------------------------------------- objection

def test_objection_under_marketing_is_absolute(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.OBJECTION, "marketing")
    for purpose in ("marketing.advertising", "marketing.recommendations"):
        decision = ask(policy, register, purpose)
        assert decision.reason is Reason.OBJECTION_RECORDED
        assert decision.rule == (f"register:objection:marketing:{utc_today()}",)
    with pytest.raises(RegisterRefusedError, match="absolute"):
        record(register, policy, K.OBJECTION_OVERRIDDEN, "marketing", ref="we insist")
    assert ask(policy, register, "marketing.advertising").reason is Reason.OBJECTION_RECORDED
    # Not marketing: unaffected.
    assert ask(policy, register, "relationship.management").allowed


def test_objection_to_one_marketing_purpose_leaves_the_others(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.OBJECTION, "marketing.recommendations")
    assert ask(policy, register, "marketing.recommendations").reason is \
        Reason.OBJECTION_RECORDED
    assert ask(policy, register, "marketing.advertising").allowed
    with pytest.raises(RegisterRefusedError, match="absolute"):
        record(register, policy, K.OBJECTION_OVERRIDDEN, "marketing.recommendations",
               ref="x")


def test_override_outside_marketing_allows_again(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.OBJECTION, "order.processing.debt_recovery")
    assert ask(policy, register, "order.processing.debt_recovery").reason is \
        Reason.OBJECTION_RECORDED
    with pytest.raises(RegisterRefusedError, match="--ref"):
        record(register, policy, K.OBJECTION_OVERRIDDEN, "order.processing.debt_recovery")
    record(register, policy, K.OBJECTION_OVERRIDDEN, "order.processing.debt_recovery",
           ref="compelling grounds: court order 12")
    assert ask(policy, register, "order.processing.debt_recovery").allowed


def test_override_needs_an_objection_in_force(
    policy: CompiledPolicy, register: Register
) -> None:
    with pytest.raises(RegisterRefusedError, match="no objection"):
        record(register, policy, K.OBJECTION_OVERRIDDEN, "analytics.improvement", ref="x")


def test_grouping_node_objection_stops_only_objectable_purposes(
    policy: CompiledPolicy, register: Register
) -> None:
    # order.processing rests on contract too: not objectable; debt recovery is.
    record(register, policy, K.OBJECTION, "order")
    assert ask(policy, register, "order.processing.debt_recovery").reason is \
        Reason.OBJECTION_RECORDED
    assert ask(policy, register, "order.processing").allowed
    assert ask(policy, register, "order.processing.payments").allowed


@pytest.mark.parametrize("node", ["customer", "customer.registration", "business",
                                  "order.processing.payments", "legal", "rights.request"])
def test_objection_covering_no_objectable_purpose_is_refused(
    policy: CompiledPolicy, register: Register, node: str
) -> None:
    with pytest.raises(RegisterRefusedError, match="covers no objectable purpose"):
        record(register, policy, K.OBJECTION, node)
    assert register.lookup(SUBJECT) is None


@pytest.mark.parametrize("kind", [K.OBJECTION, K.CONSENT_GRANTED, K.CONSENT_WITHDRAWN])
def test_unknown_purpose_is_refused(
    policy: CompiledPolicy, register: Register, kind: EntryKind
) -> None:
    events = Events()
    with pytest.raises(RegisterRefusedError, match="unknown purpose"):
        register.record(Change(SUBJECT, kind, "marketing.spam", who="t"), policy, events)
    assert events.fields == []
    assert register.lookup(SUBJECT) is None


# ---------------------------------------------------------------- retention (§8)

END = date(2020, 3, 15)


@pytest.mark.parametrize(("purpose", "day", "allowed"), [
    ("legal.compliance", date(2026, 3, 14), True),           # the day before six years
    ("legal.compliance", date(2026, 3, 15), False),          # six years are over
    ("legal.compliance", date(2026, 3, 16), False),          # the day after
    ("order.processing.debt_recovery", date(2026, 3, 14), True),
    ("order.processing.debt_recovery", date(2026, 3, 16), False),
    ("rights.request", date(2120, 1, 1), True),              # without limit
    ("order.processing", date(2020, 3, 14), True),           # before the end
    ("order.processing", date(2020, 3, 15), False),          # ends with the relationship
    ("marketing.advertising", date(2020, 3, 15), False),
    ("analytics.improvement", date(2020, 3, 16), False),
])
def test_six_year_boundary_and_survival(
    policy: CompiledPolicy, register: Register, purpose: str, day: date, allowed: bool
) -> None:
    record(register, policy, K.END_OF_RELATIONSHIP, on=END)
    decision = ask(policy, register, purpose, today=day)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason is Reason.RETENTION_EXPIRED
        assert decision.rule == ("register:end_of_relationship:all:2020-03-15",)


def test_future_dated_end_takes_effect_on_its_date(
    policy: CompiledPolicy, register: Register
) -> None:
    later = utc_today() + timedelta(days=30)
    record(register, policy, K.END_OF_RELATIONSHIP, on=later)
    assert ask(policy, register, "relationship.management").allowed
    assert ask(policy, register, "relationship.management",
               today=later - timedelta(days=1)).allowed
    assert ask(policy, register, "relationship.management", today=later).reason is \
        Reason.RETENTION_EXPIRED


def test_a_later_end_entry_supersedes_the_earlier(
    policy: CompiledPolicy, register: Register
) -> None:
    record(register, policy, K.END_OF_RELATIONSHIP, on=date(2020, 1, 1))
    record(register, policy, K.END_OF_RELATIONSHIP, on=date(2999, 1, 1))
    assert ask(policy, register, "relationship.management").allowed


def test_survival_on_a_grouping_node_covers_its_purposes(tmp_path: object) -> None:
    from policykit_local import policy_with

    policy = policy_with("g3, order, survives:1y\n")
    register = Register(KEY)
    record(register, policy, K.END_OF_RELATIONSHIP, on=date(2020, 1, 1))
    assert ask(policy, register, "order.processing", today=date(2020, 12, 31)).allowed
    assert not ask(policy, register, "order.processing", today=date(2021, 1, 1)).allowed
    # The nearest row wins: debt recovery keeps its own six years.
    assert ask(policy, register, "order.processing.debt_recovery",
               today=date(2025, 12, 31)).allowed


# ---------------------------------------------------------------- aggregated

@pytest.mark.parametrize("kind", [K.RESTRICTION, K.ERASURE_REQUESTED])
def test_aggregated_only_requests_are_not_affected(
    policy: CompiledPolicy, register: Register, kind: EntryKind
) -> None:
    record(register, policy, kind)
    record(register, policy, K.OBJECTION, "analytics")
    record(register, policy, K.END_OF_RELATIONSHIP, on=date(2001, 1, 1))
    assert ask(policy, register, "analytics.improvement", aggregated=True).allowed
    assert not ask(policy, register, "analytics.improvement").allowed


def test_every_new_reason_is_covered() -> None:
    """The reasons this file proves, beside those of tests/guard/test_engine_spec.py."""
    covered = {Reason.CONSENT_REQUIRED, Reason.RETENTION_EXPIRED, Reason.ERASURE_REQUESTED,
               Reason.PROCESSING_RESTRICTED, Reason.OBJECTION_RECORDED}
    ordered = list(Reason)[:list(Reason).index(Reason.ALLOWED)]
    assert ordered[-5:] == [Reason.CONSENT_REQUIRED, Reason.RETENTION_EXPIRED,
                            Reason.ERASURE_REQUESTED, Reason.PROCESSING_RESTRICTED,
                            Reason.OBJECTION_RECORDED]
    assert set(ordered[-5:]) == covered


def test_every_change_is_an_audit_event_naming_the_entry(
    policy: CompiledPolicy, register: Register
) -> None:
    events = Events()
    entry = register.record(Change(SUBJECT, K.OBJECTION, "marketing", ref="T-1", who="cli:ann"),
                            policy, events)
    (fields,) = events.fields
    assert fields["subject_id"] == SUBJECT  # pseudonymised by the audit pipeline
    assert fields["caller"] == "cli:ann"
    assert fields["rule"] == (f"register:objection:marketing:{utc_today()}",)
    assert entry.event_id == "event-1"
    assert entry.subject == register.pseudonym(SUBJECT) != SUBJECT


def test_check_9_without_a_subject_agrees_with_casbin(policy: CompiledPolicy) -> None:
    """The differential test needs no oracle change for check 9: casbin's matcher
    accepts only the non-consent bases, so it too refuses a consent-only purpose."""
    from pathlib import Path

    import casbin

    shipped = Path(__file__).resolve().parents[3] / "policies"
    enforcer = casbin.Enforcer(str(shipped / "model.conf"), str(shipped / "rules.csv"))
    assert not enforcer.enforce("svc:marketing", "marketing.third_party", "contact.email",
                                "read")
    assert enforcer.enforce("svc:marketing", "marketing.advertising", "contact.email", "read")
    assert ask(policy, None, "marketing.third_party", subject=None).reason is \
        Reason.CONSENT_REQUIRED
