"""Survival rows (``g3, purpose, survives:PERIOD``): lint, ropa, diff, and casbin unchanged."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import casbin
import pytest
from policykit import SHIPPED, copy_policy, edit_rules

from guard.policy import lint_policy, load_policy
from guard.policy._diff import diff_policies
from guard.policy._ropa import build_ropa, render_csv, render_markdown


def test_shipped_survival_rows() -> None:
    policy = load_policy(SHIPPED)
    assert {k: s.period for k, s in policy.survival.items()} == {
        "legal.compliance": "6y", "order.processing.debt_recovery": "6y",
        "rights.request": "unlimited"}
    # Not a lawful basis: the purposes' bases are unchanged.
    assert policy.purposes["legal.compliance"].bases == ("legal_obligation",)


@pytest.mark.parametrize(("line", "code", "column"), [
    ("g3, legal.complaince, survives:6y", "unknown-key", 5),
    ("g3, legal.compliance, survives:6 years", "bad-survival-period", 23),
    ("g3, legal.compliance, survives:0y", "bad-survival-period", 23),
    ("g3, legal.compliance, survives:", "bad-survival-period", 23),
    ("g3, legal.compliance, survives:7y", "duplicate-survival", 23),
])
def test_lint_rejects_bad_survival_rows(tmp_path: Path, line: str, code: str,
                                        column: int) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=[line])
    findings = [f for f in lint_policy(folder) if f.code == code]
    assert len(findings) == 1, lint_policy(folder)
    assert findings[0].severity.value == "error"
    assert findings[0].column == column
    assert findings[0].line == len((folder / "rules.csv").read_text().splitlines())


def test_casbin_ignores_survival_rows(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=["g3, order, survives:1y", "g3, marketing, survives:90d"])
    plain = casbin.Enforcer(str(SHIPPED / "model.conf"), str(SHIPPED / "rules.csv"))
    with_rows = casbin.Enforcer(str(folder / "model.conf"), str(folder / "rules.csv"))
    for caller, purpose, category in [("svc:billing", "order.processing", "identity"),
                                      ("svc:marketing", "marketing.advertising", "contact"),
                                      ("svc:marketing", "marketing.third_party", "contact")]:
        assert plain.enforce(caller, purpose, category, "read") == \
            with_rows.enforce(caller, purpose, category, "read")
    assert load_policy(folder).compiled


def test_ropa_shows_retention() -> None:
    activities = {a.purpose: a for a in build_ropa(load_policy(SHIPPED))}
    assert activities["legal.compliance"].retention.startswith(
        "survives the end of the relationship by 6y")
    assert "without limit" in activities["rights.request"].retention
    assert activities["marketing.advertising"].retention == \
        "ends with the customer relationship"
    text = render_markdown(list(activities.values()), "v")
    assert "- **Retention:** survives the end of the relationship by 6y" in text
    assert "retention" in render_csv(list(activities.values())).splitlines()[0]


def test_diff_shows_a_changed_survival(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, replace={"g3, legal.compliance, survives:6y":
                                "g3, legal.compliance, survives:7y"},
               drop=["g3, rights.request, survives:unlimited"])
    facts = {(f.kind, f.subject, f.old, f.new)
             for f in diff_policies(load_policy(SHIPPED), load_policy(folder)).facts}
    assert ("survival after the end", "legal.compliance", "6y", "7y") in facts
    assert ("survival after the end", "rights.request", "unlimited", "-") in facts


@pytest.mark.parametrize(("period", "until"), [
    ("6y", date(2032, 2, 28)), ("18m", date(2027, 8, 28)), ("90d", date(2026, 5, 29)),
    ("9999y", None), ("9999m", date(2859, 5, 28)), ("unlimited", None),
])
def test_a_period_past_the_calendar_has_no_end(period: str, until: date | None) -> None:
    """``9999y`` passes lint; it must end nowhere, not raise in the middle of a decision."""
    from guard.policy._survival import Survival

    assert Survival("legal.compliance", period, "rules.csv:1").until(date(2026, 2, 28)) == until
    assert Survival("p", "9999d", "x").until(date.max) is None
