"""``decide_categories`` answers, per category, what ``decide`` answers for it alone.

hypothesis draws callers (known and not), purposes (declarable, grouping nodes,
unknown), category lists (every node of the shipped tree, special, aggregated,
unknown, repeats), actions and subjects with register entries of every kind, and
compares each category's verdict with a one-category ``decide``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._types import Action, Reason, Request
from guard.engine import decide, decide_categories
from guard.policy import CompiledPolicy, load_policy
from guard.rights import EntryKind, Record, Register

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
POLICY: CompiledPolicy = load_policy(POLICY_DIR)
DAY = date(2026, 6, 1)
REGISTER = Register(b"k" * 32)
SUBJECTS: dict[str, list[Record]] = {
    "s-restricted": [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))],
    "s-erased": [Record(EntryKind.ERASURE_REQUESTED, "", date(2020, 1, 1))],
    "s-ended": [Record(EntryKind.END_OF_RELATIONSHIP, "", date(2021, 1, 1))],
    "s-objects": [Record(EntryKind.OBJECTION, "marketing", date(2020, 1, 1)),
                  Record(EntryKind.OBJECTION, "business.administration", date(2020, 1, 1))],
    "s-consents": [Record(EntryKind.CONSENT_GRANTED, "marketing.third_party",
                          date(2020, 1, 1))],
    "s-future": [Record(EntryKind.RESTRICTION, "", date(2030, 1, 1))],
}
for _subject, _records in SUBJECTS.items():
    REGISTER.apply(REGISTER.pseudonym(_subject), _records)

CALLERS = [*sorted(POLICY.parties), "svc:nobody"]
PURPOSES = [*sorted(POLICY.purposes), "world.domination"]
CATEGORIES = [*sorted(POLICY.categories), "loyalty", "contact.fax"]

requests = st.builds(
    Request,
    caller=st.sampled_from(CALLERS),
    purpose=st.sampled_from(PURPOSES),
    categories=st.lists(st.sampled_from(CATEGORIES), min_size=0, max_size=8).map(tuple),
    action=st.sampled_from(list(Action)),
    subject=st.sampled_from([None, "s-none", *SUBJECTS]),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_each_category_as_decide_alone(request: Request) -> None:
    judged = decide_categories(POLICY, request, REGISTER, today=DAY)
    unique = tuple(dict.fromkeys(request.categories))
    assert judged.released == tuple(c for c in unique if c in judged.released)
    assert tuple(c for c, _ in judged.withheld) == tuple(
        c for c in unique if c not in judged.released)
    assert set(judged.released) | {c for c, _ in judged.withheld} == set(unique)
    withheld = dict(judged.withheld)
    for key in unique:
        alone = decide(POLICY, Request(request.caller, request.purpose, (key,),
                                       request.action, request.subject), REGISTER, today=DAY)
        if alone.allowed:
            assert key in judged.released, (key, alone)
        else:
            assert withheld.get(key) is alone.reason, (key, alone)
    personal = [c for c in unique if c != "aggregated"]
    summary = judged.decision
    expected = (any(c in judged.released for c in personal)
                or (not personal and bool(judged.released)))
    assert summary.allowed is expected
    assert summary.categories == request.categories
    if summary.allowed:
        assert summary.reason is Reason.ALLOWED
    elif unique:
        first = next((c for c in personal if c in withheld), next(iter(withheld)))
        assert summary.reason is withheld[first]
    else:
        assert summary.reason is Reason.MALFORMED_REQUEST


@settings(max_examples=300, deadline=None)
@given(requests)
def test_all_released_iff_decide_allows(request: Request) -> None:
    judged = decide_categories(POLICY, request, REGISTER, today=DAY)
    whole = decide(POLICY, request, REGISTER, today=DAY)
    assert whole.allowed is (bool(request.categories) and not judged.withheld)


@pytest.mark.parametrize(("caller", "purpose", "released", "withheld"), [
    ("svc:crm", "relationship.management", ("identity", "contact.email"),
     (("financial", Reason.CATEGORY_NOT_IN_PURPOSE),)),
    ("proc:payments", "order.processing.payments", ("identity.name", "financial"),
     (("contact.email", Reason.CATEGORY_NOT_GRANTED),)),
    ("svc:marketing", "marketing.advertising", ("identity", "contact.email"),
     (("financial", Reason.CATEGORY_NOT_IN_PURPOSE),)),
])
def test_shipped_callers(caller: str, purpose: str, released: tuple[str, ...],
                         withheld: tuple[tuple[str, Reason], ...]) -> None:
    cats = (*released, *(c for c, _ in withheld))
    judged = decide_categories(POLICY, Request(caller, purpose, cats))
    assert judged.released == released
    assert judged.withheld == withheld
    assert judged.decision.allowed
    assert judged.detail().startswith('{"released":[')
