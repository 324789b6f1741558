"""The shipped policy decides what POLICY-SPEC.md says, for every caller and every reason.

Written from the specification: expected outcomes come from its tables (§1, §2, §3),
not from the engine's code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guard._types import Action, Reason, Request
from guard.engine import decide, explain
from guard.policy import CompiledPolicy, compile_policy, load_policy

READ, WRITE = Action.READ, Action.WRITE
PERSONAL = ("identity", "contact", "financial", "transaction", "technical", "profile", "usage",
            "marketing")

# POLICY-SPEC §1 Purposes: ceiling and lawful bases, verbatim.
PURPOSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "customer.registration": (("identity", "contact"), ("contract",)),
    "order.processing": (("identity", "contact", "financial", "transaction", "marketing"),
                         ("contract", "legitimate_interest")),
    "order.processing.payments": (("identity", "contact", "financial", "transaction"),
                                  ("contract",)),
    "order.processing.debt_recovery": (("identity", "contact", "financial", "transaction"),
                                       ("legitimate_interest",)),
    "relationship.management": (("identity", "contact", "profile", "marketing"),
                                ("contract", "legal_obligation", "legitimate_interest")),
    "promotion.prize_draw": (("identity", "contact", "profile", "usage", "marketing"),
                             ("contract", "legitimate_interest")),
    "business.administration": (("identity", "contact", "technical"),
                                ("legitimate_interest", "legal_obligation")),
    "marketing.advertising": (("identity", "contact", "profile", "usage", "marketing",
                               "technical"), ("legitimate_interest",)),
    "marketing.recommendations": (("identity", "contact", "technical", "usage", "profile",
                                   "marketing"), ("legitimate_interest",)),
    "marketing.third_party": (("identity", "contact"), ("consent",)),
    "analytics.improvement": (("technical", "usage"), ("legitimate_interest",)),
    "legal.compliance": (("identity", "contact", "financial", "transaction"),
                         ("legal_obligation",)),
    "rights.request": (PERSONAL, ("legal_obligation",)),
}
GROUPINGS = ("customer", "order", "relationship", "promotion", "business", "marketing",
             "analytics", "legal", "rights")
ADEQUATE = ("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IS",
            "IE", "IT", "LV", "LI", "LT", "LU", "MT", "NL", "NO", "PL", "PT", "RO", "SK", "SI",
            "ES", "SE", "CH", "JP", "KR", "NZ", "IL", "AR", "UY", "CA")

# POLICY-SPEC §2: caller -> (party type, country).
CALLERS = {
    "svc:web": ("internal", "GB"), "svc:checkout": ("internal", "GB"),
    "svc:billing": ("internal", "GB"), "svc:crm": ("internal", "GB"),
    "svc:marketing": ("internal", "GB"), "svc:analytics": ("internal", "GB"),
    "svc:support": ("internal", "GB"), "svc:auth": ("internal", "GB"),
    "grp:exalens-nl": ("group", "NL"), "grp:exalens-in": ("group", "IN"),
    "grp:exalens-us": ("group", "US"), "proc:cloudhost": ("processor", "IE"),
    "proc:payments": ("processor", "GB"), "proc:mailer": ("processor", "US"),
    "proc:debtco": ("processor", "GB"), "adv:accountants": ("adviser", "GB"),
    "auth:hmrc": ("authority", "GB"),
}


@pytest.fixture(scope="module")
def policy(policy_dir: Path) -> CompiledPolicy:
    return load_policy(policy_dir)


def ask(policy: CompiledPolicy, caller: str, purpose: str, *cats: str,
        action: Action = READ, subject: str | None = None) -> Reason:
    return decide(policy, Request(caller, purpose, cats, action, subject)).reason


def ancestors(key: str) -> set[str]:
    """A dotted key and every parent of it (spec §1: keys are hierarchical)."""
    parts = key.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1)}


def extended(policy_dir: Path, extra: str) -> CompiledPolicy:
    """The shipped policy plus some rows, compiled as a new policy."""
    return compile_policy(
        (policy_dir / "model.conf").read_text(), (policy_dir / "rules.csv").read_text() + extra
    )


# ------------------------------------------------------------------ §2 shipped callers

# Each shipped caller: one request its grant allows, and its characteristic denial.
ALLOWS = [
    ("svc:web", "customer.registration", ("identity.name", "contact.email"), WRITE),
    ("svc:web", "business.administration", ("technical.browser",), READ),
    ("svc:checkout", "order.processing.payments", ("financial.payment_card",), WRITE),
    ("svc:billing", "order.processing", ("contact.billing_address", "transaction"), READ),
    ("svc:billing", "order.processing.payments", ("transaction.payments",), READ),
    ("svc:billing", "legal.compliance", ("financial.bank_account",), READ),
    ("svc:crm", "relationship.management", ("profile.interests", "marketing"), WRITE),
    ("svc:crm", "promotion.prize_draw", ("usage.website",), READ),
    ("svc:marketing", "marketing.advertising", ("profile.interests", "usage"), READ),
    ("svc:marketing", "marketing.recommendations", ("marketing.preferences",), READ),
    ("svc:analytics", "analytics.improvement", ("technical.device", "usage.product"), READ),
    ("svc:support", "rights.request", PERSONAL, WRITE),
    ("svc:support", "business.administration", ("technical.login",), READ),
    ("svc:auth", "business.administration", ("identity.username", "technical.login"), WRITE),
    ("grp:exalens-nl", "business.administration", ("contact.phone",), READ),
    ("grp:exalens-in", "business.administration", ("identity.name", "technical"), READ),
    ("grp:exalens-us", "business.administration", ("aggregated",), READ),
    ("proc:cloudhost", "business.administration", ("identity", "contact", "technical"), READ),
    ("proc:payments", "order.processing.payments",
     ("identity.name", "contact.billing_address", "financial", "transaction.payments"), READ),
    ("proc:mailer", "marketing.advertising",
     ("contact.email", "identity.name", "marketing.communication_preferences"), READ),
    ("proc:debtco", "order.processing.debt_recovery", ("transaction.purchases",), READ),
    ("adv:accountants", "legal.compliance", ("financial", "transaction.payments"), READ),
    ("auth:hmrc", "legal.compliance", ("identity.date_of_birth", "financial"), READ),
]

DENIALS = [
    ("svc:web", "business.administration", ("technical",), WRITE, Reason.CATEGORY_NOT_GRANTED),
    ("svc:web", "customer.registration", ("financial",), READ, Reason.CATEGORY_NOT_IN_PURPOSE),
    ("svc:checkout", "order.processing", ("financial",), READ, Reason.PURPOSE_NOT_GRANTED),
    ("svc:billing", "order.processing", ("identity",), WRITE, Reason.CATEGORY_NOT_GRANTED),
    ("svc:billing", "order.processing", ("marketing",), READ, Reason.CATEGORY_NOT_GRANTED),
    ("svc:crm", "promotion.prize_draw", ("usage",), WRITE, Reason.CATEGORY_NOT_GRANTED),
    ("svc:crm", "promotion.prize_draw", ("technical",), READ, Reason.CATEGORY_NOT_IN_PURPOSE),
    ("svc:marketing", "marketing.third_party", ("contact.email",), READ,
     Reason.CONSENT_REQUIRED),
    ("svc:marketing", "marketing", ("contact",), READ, Reason.UNKNOWN_PURPOSE),
    ("svc:marketing", "marketing.recommendations", ("technical",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("svc:analytics", "analytics.improvement", ("identity",), READ,
     Reason.CATEGORY_NOT_IN_PURPOSE),
    ("svc:support", "rights.request", ("special.health",), READ, Reason.SPECIAL_CATEGORY),
    ("svc:support", "marketing.advertising", ("contact",), READ, Reason.PURPOSE_NOT_GRANTED),
    ("svc:auth", "business.administration", ("identity.name",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("svc:auth", "business.administration", ("identity",), READ, Reason.CATEGORY_NOT_GRANTED),
    ("grp:exalens-nl", "legal.compliance", ("identity",), READ, Reason.PURPOSE_NOT_GRANTED),
    ("grp:exalens-in", "business.administration", ("identity",), WRITE,
     Reason.CATEGORY_NOT_GRANTED),
    ("grp:exalens-us", "business.administration", ("technical.ip_address",), READ,
     Reason.TRANSFER_NOT_SAFEGUARDED),
    ("grp:exalens-us", "business.administration", ("technical", "aggregated"), READ,
     Reason.TRANSFER_NOT_SAFEGUARDED),
    ("proc:cloudhost", "marketing.advertising", ("contact",), READ, Reason.PURPOSE_NOT_GRANTED),
    ("proc:payments", "order.processing.payments", ("identity.date_of_birth",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("proc:payments", "order.processing.payments", ("contact",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("proc:mailer", "marketing.advertising", ("contact.phone",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("proc:mailer", "marketing.recommendations", ("contact.email",), READ,
     Reason.PURPOSE_NOT_GRANTED),
    ("proc:debtco", "order.processing.debt_recovery", ("financial.bank_account",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("adv:accountants", "legal.compliance", ("identity.name",), READ,
     Reason.CATEGORY_NOT_GRANTED),
    ("auth:hmrc", "business.administration", ("identity",), READ, Reason.PURPOSE_NOT_GRANTED),
    ("auth:hmrc", "legal.compliance", ("financial",), WRITE, Reason.CATEGORY_NOT_GRANTED),
]


def test_every_shipped_caller_has_an_allow_and_a_denial() -> None:
    assert {row[0] for row in ALLOWS} == set(CALLERS)
    assert {row[0] for row in DENIALS} == set(CALLERS)


@pytest.mark.parametrize(("caller", "purpose", "cats", "action"), ALLOWS)
def test_shipped_caller_allowed(
    policy: CompiledPolicy, caller: str, purpose: str, cats: tuple[str, ...], action: Action
) -> None:
    decision = decide(policy, Request(caller, purpose, cats, action))
    assert decision.allowed, decision
    assert decision.reason is Reason.ALLOWED
    assert (decision.party_type, decision.country) == CALLERS[caller]


@pytest.mark.parametrize(("caller", "purpose", "cats", "action", "reason"), DENIALS)
def test_shipped_caller_denied(
    policy: CompiledPolicy, caller: str, purpose: str, cats: tuple[str, ...], action: Action,
    reason: Reason,
) -> None:
    decision = decide(policy, Request(caller, purpose, cats, action))
    assert not decision.allowed
    assert decision.reason is reason
    assert decision.rule == (f"check:{reason.value}",)


# ------------------------------------------------------------------ §3 reasons and order

REASONS = [
    # 1 unknown_caller, before everything else
    ("svc:nobody", "relationship.management", ("identity",), Reason.UNKNOWN_CALLER),
    ("svc:nobody", "no.such.purpose", ("special.health", "nope"), Reason.UNKNOWN_CALLER),
    ("", "relationship.management", ("identity",), Reason.UNKNOWN_CALLER),
    # 2 unknown_purpose: missing, not in the tree, or a grouping node
    ("svc:crm", "", ("identity",), Reason.UNKNOWN_PURPOSE),
    ("svc:crm", "relationship.gossip", ("identity",), Reason.UNKNOWN_PURPOSE),
    ("svc:crm", "relationship", ("identity",), Reason.UNKNOWN_PURPOSE),
    ("svc:crm", "no.such", ("nope", "special.health"), Reason.UNKNOWN_PURPOSE),
    # 3 unknown_category, over all categories before special
    ("svc:crm", "relationship.management", ("identity.shoe_size",), Reason.UNKNOWN_CATEGORY),
    ("svc:crm", "relationship.management", ("special.health", "nope"),
     Reason.UNKNOWN_CATEGORY),
    ("svc:crm", "relationship.management", ("category",), Reason.UNKNOWN_CATEGORY),
    # 4 special_category, whatever else is wrong
    ("svc:crm", "relationship.management", ("special.health",), Reason.SPECIAL_CATEGORY),
    ("svc:crm", "relationship.management", ("special",), Reason.SPECIAL_CATEGORY),
    ("svc:crm", "relationship.management", ("technical", "special.genetic"),
     Reason.SPECIAL_CATEGORY),
    ("svc:crm", "analytics.improvement", ("special.biometric",), Reason.SPECIAL_CATEGORY),
    ("grp:exalens-us", "business.administration", ("special.criminal",),
     Reason.SPECIAL_CATEGORY),
    # 5 purpose_not_granted before the ceiling
    ("svc:analytics", "business.administration", ("profile",), Reason.PURPOSE_NOT_GRANTED),
    ("svc:analytics", "business.administration", ("aggregated",), Reason.PURPOSE_NOT_GRANTED),
    # 6 category_not_in_purpose before need-to-know
    ("svc:billing", "order.processing", ("marketing", "technical"),
     Reason.CATEGORY_NOT_IN_PURPOSE),
    # 7 category_not_granted before the transfer check
    ("grp:exalens-us", "business.administration", ("identity",), Reason.CATEGORY_NOT_GRANTED),
    ("grp:exalens-us", "business.administration", ("technical",), Reason.TRANSFER_NOT_SAFEGUARDED),
    # 9 consent_required, even when a subject is named (no consent store yet)
    ("svc:marketing", "marketing.third_party", ("identity.name",), Reason.CONSENT_REQUIRED),
    ("svc:marketing", "marketing.third_party", ("aggregated",), Reason.CONSENT_REQUIRED),
]


@pytest.mark.parametrize(("caller", "purpose", "cats", "reason"), REASONS)
def test_reason_and_check_order(
    policy: CompiledPolicy, caller: str, purpose: str, cats: tuple[str, ...], reason: Reason
) -> None:
    assert ask(policy, caller, purpose, *cats) is reason


def test_every_reason_code_of_the_ordered_checks_is_covered() -> None:
    ordered = set(list(Reason)[: list(Reason).index(Reason.ALLOWED)])
    covered = {row[3] for row in REASONS} | {row[4] for row in DENIALS}
    # Checks 10-13 need register entries: tests/guard/rights/test_rights_spec.py covers them.
    register = {Reason.RETENTION_EXPIRED, Reason.ERASURE_REQUESTED,
                Reason.PROCESSING_RESTRICTED, Reason.OBJECTION_RECORDED}
    assert ordered - register <= covered


def test_consent_required_even_with_a_subject(policy: CompiledPolicy) -> None:
    reason = ask(policy, "svc:marketing", "marketing.third_party", "contact.email",
                 subject="customer-42")
    assert reason is Reason.CONSENT_REQUIRED


def test_transfer_is_checked_before_consent(policy_dir: Path) -> None:
    policy = extended(policy_dir, "\ng4, proc:abroad, processor\ng5, proc:abroad, US\n"
                                  "p, proc:abroad, marketing.third_party, contact, read\n")
    assert ask(policy, "proc:abroad", "marketing.third_party", "contact") is (
        Reason.TRANSFER_NOT_SAFEGUARDED
    )
    policy = extended(policy_dir, "\ng4, proc:abroad, processor\ng5, proc:abroad, US\n"
                                  "g5, proc:abroad, uk_addendum\n"
                                  "p, proc:abroad, marketing.third_party, contact, read\n")
    assert ask(policy, "proc:abroad", "marketing.third_party", "contact") is (
        Reason.CONSENT_REQUIRED
    )


def test_empty_category_list_is_a_denial(policy: CompiledPolicy) -> None:
    decision = decide(policy, Request("svc:crm", "relationship.management", ()))
    assert not decision.allowed


# ------------------------------------------------------------------ §1 vocabulary

@pytest.mark.parametrize("grouping", GROUPINGS)
def test_groupings_are_not_declarable(policy: CompiledPolicy, grouping: str) -> None:
    # svc:support holds rights.request, svc:marketing holds the marketing grouping itself.
    for caller in ("svc:support", "svc:marketing"):
        assert ask(policy, caller, grouping, "identity") is Reason.UNKNOWN_PURPOSE


def probe_policy(policy_dir: Path) -> CompiledPolicy:
    """Shipped policy + a GB caller granted, read, exactly each purpose's spec ceiling."""
    rows = ["", "g4, svc:probe, internal", "g5, svc:probe, GB"]
    for purpose, (ceiling, _) in PURPOSES.items():
        rows += [f"p, svc:probe, {purpose}, {cat}, read" for cat in ceiling]
    return extended(policy_dir, "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def probe(policy_dir: Path) -> CompiledPolicy:
    return probe_policy(policy_dir)


@pytest.mark.parametrize("purpose", list(PURPOSES))
def test_purpose_ceiling_and_lawful_basis(probe: CompiledPolicy, purpose: str) -> None:
    ceiling, bases = PURPOSES[purpose]
    for cat in (*PERSONAL, *(f"{c}.{child}" for c, child in
                             (("identity", "name"), ("technical", "device"),
                              ("usage", "product"), ("financial", "bank_account")))):
        decision = decide(probe, Request("svc:probe", purpose, (cat,)))
        assert set(decision.lawful_basis) == set(bases)
        if cat.split(".")[0] not in ceiling:
            assert decision.reason is Reason.CATEGORY_NOT_IN_PURPOSE, cat
        elif bases == ("consent",):
            assert decision.reason is Reason.CONSENT_REQUIRED, cat
        else:
            assert decision.reason is Reason.ALLOWED, cat


def test_rights_request_covers_all_personal_but_not_special_or_aggregated(
    policy: CompiledPolicy,
) -> None:
    assert ask(policy, "svc:support", "rights.request", *PERSONAL, action=WRITE) is Reason.ALLOWED
    assert ask(policy, "svc:support", "rights.request", "special") is Reason.SPECIAL_CATEGORY
    assert ask(policy, "svc:support", "rights.request", "aggregated") is Reason.ALLOWED
    assert ask(policy, "svc:support", "rights.request", "aggregated", action=WRITE) is (
        Reason.CATEGORY_NOT_GRANTED
    )


INHERITANCE = [
    # a grant on a parent purpose covers its children
    ("svc:billing", "order.processing.debt_recovery", ("contact.phone",), Reason.ALLOWED),
    ("svc:marketing", "marketing.advertising", ("identity.gender",), Reason.ALLOWED),
    # ... but a grant on a child does not cover the parent or a sibling
    ("svc:checkout", "order.processing.debt_recovery", ("identity",),
     Reason.PURPOSE_NOT_GRANTED),
    # a grant on a parent category covers its children, not the reverse
    ("svc:web", "customer.registration", ("contact.delivery_address",), Reason.ALLOWED),
    ("proc:payments", "order.processing.payments", ("transaction",), Reason.CATEGORY_NOT_GRANTED),
    ("proc:payments", "order.processing.payments", ("transaction.purchases",),
     Reason.CATEGORY_NOT_GRANTED),
    # a child purpose is judged against its own ceiling, not its parent's
    ("svc:marketing", "marketing.third_party", ("profile",), Reason.CATEGORY_NOT_IN_PURPOSE),
    ("svc:billing", "order.processing.payments", ("marketing",), Reason.CATEGORY_NOT_IN_PURPOSE),
    ("svc:marketing", "marketing.recommendations", ("usage.website",), Reason.ALLOWED),
]


@pytest.mark.parametrize(("caller", "purpose", "cats", "reason"), INHERITANCE)
def test_tree_inheritance(
    policy: CompiledPolicy, caller: str, purpose: str, cats: tuple[str, ...], reason: Reason
) -> None:
    assert ask(policy, caller, purpose, *cats) is reason


@pytest.mark.parametrize(
    ("caller", "purpose", "cat"),
    [("svc:billing", "order.processing", "identity"),
     ("svc:web", "business.administration", "technical.login"),
     ("proc:mailer", "marketing.advertising", "contact.email"),
     ("svc:analytics", "analytics.improvement", "usage")],
)
def test_read_does_not_imply_write(
    policy: CompiledPolicy, caller: str, purpose: str, cat: str
) -> None:
    assert ask(policy, caller, purpose, cat) is Reason.ALLOWED
    assert ask(policy, caller, purpose, cat, action=WRITE) is Reason.CATEGORY_NOT_GRANTED


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_aggregated_readable_by_every_caller_under_its_purposes(
    policy: CompiledPolicy, caller: str
) -> None:
    granted = {row[1] for row in ALLOWS if row[0] == caller}
    for purpose in granted:
        assert ask(policy, caller, purpose, "aggregated") is Reason.ALLOWED
    assert ask(policy, "svc:nobody", next(iter(granted)), "aggregated") is (
        Reason.UNKNOWN_CALLER
    )


# ------------------------------------------------------------------ §1 transfers

@pytest.mark.parametrize(
    ("caller", "cat", "reason"),
    [("grp:exalens-us", "technical", Reason.TRANSFER_NOT_SAFEGUARDED),
     ("grp:exalens-in", "technical", Reason.ALLOWED),   # IN, no adequacy, idta
     ("grp:exalens-nl", "technical", Reason.ALLOWED),   # NL adequate
     ("proc:cloudhost", "technical", Reason.ALLOWED),   # IE adequate
     ("grp:exalens-us", "aggregated", Reason.ALLOWED)],  # not personal data
)
def test_shipped_transfers(policy: CompiledPolicy, caller: str, cat: str, reason: Reason) -> None:
    assert ask(policy, caller, "business.administration", cat) is reason


@pytest.mark.parametrize(
    ("country", "mechanism", "reason"),
    [*((c, None, Reason.ALLOWED) for c in ADEQUATE),
     ("GB", None, Reason.ALLOWED),
     *((c, None, Reason.TRANSFER_NOT_SAFEGUARDED) for c in ("US", "IN", "CN", "BR", "AU", "ZA")),
     ("US", "idta", Reason.ALLOWED), ("BR", "uk_addendum", Reason.ALLOWED)],
)
def test_adequacy_list_and_mechanisms(
    policy_dir: Path, country: str, mechanism: str | None, reason: Reason
) -> None:
    rows = f"\ng4, proc:probe, processor\ng5, proc:probe, {country}\n"
    rows += f"g5, proc:probe, {mechanism}\n" if mechanism else ""
    rows += "p, proc:probe, business.administration, technical, read\n"
    policy = extended(policy_dir, rows)
    assert ask(policy, "proc:probe", "business.administration", "technical.device") is reason


# ------------------------------------------------------------------ §3 Decision fields

RULES_LINES: dict[Path, list[str]] = {}


def rule_line(policy_dir: Path, location: str) -> list[str]:
    name, number = location.split(":")
    assert name == "rules.csv"
    lines = RULES_LINES.setdefault(policy_dir, (policy_dir / name).read_text().splitlines())
    return [part.strip() for part in lines[int(number) - 1].split(",")]


@pytest.mark.parametrize(("caller", "purpose", "cats", "action"), ALLOWS)
def test_allowed_rule_points_at_the_granting_lines(
    policy: CompiledPolicy, policy_dir: Path, caller: str, purpose: str, cats: tuple[str, ...],
    action: Action,
) -> None:
    decision = decide(policy, Request(caller, purpose, cats, action))
    assert decision.rule
    granted_by: dict[str, list[str]] = {}
    for location in decision.rule:
        if location == "builtin:aggregated":
            continue
        ptype, who, pur, cat, act = rule_line(policy_dir, location)
        assert (ptype, who, act) == ("p", caller, action.value), location
        assert pur in ancestors(purpose), location
        granted_by.setdefault(cat, []).append(location)
    for cat in cats:  # every personal category is covered by a cited line
        if cat != "aggregated":
            assert ancestors(cat) & set(granted_by), cat


@pytest.mark.parametrize("purpose", list(PURPOSES))
def test_lawful_basis_on_denials_too(policy: CompiledPolicy, purpose: str) -> None:
    decision = decide(policy, Request("svc:nobody-granted", purpose, ("identity",)))
    assert decision.reason is Reason.UNKNOWN_CALLER
    decision = decide(policy, Request("auth:hmrc", purpose, ("identity",)))
    assert set(decision.lawful_basis) == set(PURPOSES[purpose][1])


def test_decision_echoes_the_request(policy: CompiledPolicy) -> None:
    request = Request("svc:crm", "relationship.management", ("identity.name", "contact"), WRITE)
    decision = decide(policy, request)
    assert (decision.caller, decision.purpose, decision.categories, decision.action) == (
        "svc:crm", "relationship.management", ("identity.name", "contact"), WRITE)
    assert decision.to_dict()["categories"] == ["identity.name", "contact"]


def test_policy_version_is_a_digest_of_model_and_rules(policy_dir: Path, tmp_path: Path) -> None:
    model = (policy_dir / "model.conf").read_text()
    rules = (policy_dir / "rules.csv").read_text()
    base = compile_policy(model, rules)
    assert compile_policy(model, rules).version == base.version
    assert load_policy(policy_dir).version == base.version
    assert compile_policy(model, rules + " ").version != base.version
    assert compile_policy(model, rules.replace("svc:web", "svc:wex")).version != base.version
    assert compile_policy(model + "\n", rules).version != base.version
    changed = compile_policy(model, rules + "# one more byte\n")
    decision = decide(changed, Request("svc:crm", "relationship.management", ("identity",)))
    assert decision.policy_version == changed.version != base.version


def test_explain_runs_the_checks_in_order(policy: CompiledPolicy) -> None:
    order = [r.value for r in list(Reason)[: list(Reason).index(Reason.ALLOWED)]]
    decision, steps = explain(
        policy, Request("svc:crm", "relationship.management", ("identity",))
    )
    assert decision.allowed
    assert [s.check for s in steps] == order
    assert all(s.passed for s in steps)
    decision, steps = explain(
        policy, Request("grp:exalens-us", "business.administration", ("technical",))
    )
    assert [s.check for s in steps] == order[: order.index("transfer_not_safeguarded") + 1]
    assert [s.passed for s in steps][-1] is False
    assert decision.reason is Reason.TRANSFER_NOT_SAFEGUARDED
