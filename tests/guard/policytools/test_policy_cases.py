"""Policy test cases: the shipped ones pass, a wrong one fails with its line, bad rows refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from policykit import SHIPPED

from guard._errors import PolicyError
from guard._types import Action, Reason
from guard.policy._load import load_policy
from guard.policy._tests import parse_cases, read_cases, run_cases, summary

SPEC_CALLERS = {
    "svc:web", "svc:checkout", "svc:billing", "svc:crm", "svc:marketing", "svc:analytics",
    "svc:support", "svc:auth", "grp:exalens-nl", "grp:exalens-in", "grp:exalens-us",
    "proc:cloudhost", "proc:payments", "proc:mailer", "proc:debtco", "adv:accountants",
    "auth:hmrc",
}
ORDERED_REASONS = {
    Reason.UNKNOWN_CALLER, Reason.UNKNOWN_PURPOSE, Reason.UNKNOWN_CATEGORY,
    Reason.SPECIAL_CATEGORY, Reason.PURPOSE_NOT_GRANTED, Reason.CATEGORY_NOT_IN_PURPOSE,
    Reason.CATEGORY_NOT_GRANTED, Reason.TRANSFER_NOT_SAFEGUARDED, Reason.CONSENT_REQUIRED,
    Reason.ALLOWED,
}


def test_shipped_cases_pass_and_cover_the_spec() -> None:
    cases = read_cases(SHIPPED / "tests.csv")
    results = run_cases(load_policy(SHIPPED), cases)
    assert [r.describe() for r in results if not r.passed] == []
    assert summary(results) == f"{len(cases)} passed, 0 failed"
    assert {c.reason for c in cases} == ORDERED_REASONS
    allowed = {c.request.caller for c in cases if c.allowed}
    denied = {c.request.caller for c in cases if not c.allowed}
    assert allowed >= SPEC_CALLERS
    assert denied >= SPEC_CALLERS


def test_a_wrong_expectation_fails_with_its_line() -> None:
    text = (
        "caller, purpose, categories, action, expected, reason, note\n"
        "# comment\n"
        "svc:crm, relationship.management, identity, read, allow, allowed\n"
        "svc:crm, relationship.management, identity, write, deny, category_not_granted, oops\n"
        "svc:crm, relationship.management, identity;special.health, read, deny, "
        "category_not_granted\n"
    )
    results = run_cases(load_policy(SHIPPED), parse_cases(text, "cases.csv"))
    assert [r.passed for r in results] == [True, False, False]
    assert results[1].describe() == (
        "cases.csv:4: FAIL svc:crm relationship.management identity write: expected deny "
        "(category_not_granted), got allow (allowed) -- oops")
    assert "got deny (special_category)" in results[2].describe()
    assert summary(results) == "1 passed, 2 failed"


def test_defaults_action_read_and_reason_allowed() -> None:
    (case,) = parse_cases("svc:crm, relationship.management, contact, , allow, \n")
    assert case.request.action is Action.READ
    assert case.reason is Reason.ALLOWED
    assert case.request.categories == ("contact",)


@pytest.mark.parametrize(("row", "value", "message"), [
    ("svc:crm, relationship.management, contact, read, allow", None, "expected 6 or 7 columns"),
    ("svc:crm, relationship.management, , read, allow, allowed", None, "no category"),
    ("svc:crm, relationship.management, contact, erase, allow, allowed", "erase",
     "action must be read or write"),
    ("svc:crm, relationship.management, contact, read, maybe, allowed", "maybe",
     "expected must be allow or deny"),
    ("svc:crm, relationship.management, contact, read, deny, nope", "nope",
     "unknown reason 'nope'"),
    ("svc:crm, relationship.management, contact, read, allow, unknown_caller", "unknown_caller",
     "does not go with reason"),
])
def test_malformed_rows_name_line_and_column(row: str, value: str | None, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_cases("# header comment\n" + row + "\n", "cases.csv")
    err = raised.value
    assert (err.path, err.line) == ("cases.csv", 2)
    assert err.column == (row.index(value) + 1 if value else err.column)
    assert message in err.message
    assert err.hint


def test_missing_cases_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="test cases not found"):
        read_cases(tmp_path / "nope.csv")
