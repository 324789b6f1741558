"""The record of processing activities lists every purpose of POLICY-SPEC with its facts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from policykit import SHIPPED, copy_policy, edit_rules

from guard.policy._load import load_policy
from guard.policy._ropa import Activity, build_ropa, render_csv, render_markdown

# POLICY-SPEC §1 Purposes: key -> (categories, lawful bases)
SPEC = {
    "customer.registration": ("identity, contact", "contract"),
    "order.processing": ("identity, contact, financial, transaction, marketing",
                         "contract, legitimate_interest"),
    "order.processing.payments": ("identity, contact, financial, transaction", "contract"),
    "order.processing.debt_recovery": ("identity, contact, financial, transaction",
                                       "legitimate_interest"),
    "relationship.management": ("identity, contact, profile, marketing",
                                "contract, legal_obligation, legitimate_interest"),
    "promotion.prize_draw": ("identity, contact, profile, usage, marketing",
                             "contract, legitimate_interest"),
    "business.administration": ("identity, contact, technical",
                                "legitimate_interest, legal_obligation"),
    "marketing.advertising": ("identity, contact, profile, usage, marketing, technical",
                              "legitimate_interest"),
    "marketing.recommendations": ("identity, contact, technical, usage, profile, marketing",
                                  "legitimate_interest"),
    "marketing.third_party": ("identity, contact", "consent"),
    "analytics.improvement": ("technical, usage", "legitimate_interest"),
    "legal.compliance": ("identity, contact, financial, transaction", "legal_obligation"),
    "rights.request": ("identity, contact, financial, transaction, technical, profile, usage, "
                       "marketing", "legal_obligation"),
}


def _split(text: str) -> set[str]:
    return {part.strip() for part in text.split(",")}


def _by_purpose() -> dict[str, Activity]:
    return {a.purpose: a for a in build_ropa(load_policy(SHIPPED))}


def test_every_spec_purpose_with_categories_and_bases() -> None:
    activities = _by_purpose()
    assert set(activities) == set(SPEC)
    for key, (categories, bases) in SPEC.items():
        assert set(activities[key].categories) == _split(categories), key
        assert set(activities[key].lawful_bases) == _split(bases), key


def test_recipients_by_party_type_with_what_they_receive() -> None:
    admin = _by_purpose()["business.administration"]
    who = {r.caller: (r.party_type, r.categories, r.actions) for r in admin.recipients}
    assert who["svc:auth"] == ("internal", ("identity.username", "technical.login"),
                               ("read", "write"))
    assert who["proc:cloudhost"] == ("processor", ("contact", "identity", "technical"), ("read",))
    assert {c for c, (kind, _, _) in who.items() if kind == "group"} == {
        "grp:exalens-nl", "grp:exalens-in", "grp:exalens-us"}
    # grouping grants reach the purposes under them, cut to each ceiling
    third = _by_purpose()["marketing.third_party"]
    assert [(r.caller, r.categories) for r in third.recipients] == [
        ("svc:marketing", ("contact", "identity"))]


def test_transfers_with_safeguards_and_the_unsafeguarded_flagged() -> None:
    admin = _by_purpose()["business.administration"]
    transfers = {r.caller: (r.country, r.safeguard, r.safeguarded) for r in admin.transfers}
    assert transfers == {
        "grp:exalens-nl": ("NL", "adequacy", True),
        "grp:exalens-in": ("IN", "idta", True),
        "grp:exalens-us": ("US", "none", False),
        "proc:cloudhost": ("IE", "adequacy", True),
    }
    mailer = _by_purpose()["marketing.advertising"].transfers
    assert [(r.caller, r.safeguard) for r in mailer] == [("proc:mailer", "idta")]


def test_markdown_lists_every_purpose_and_flags() -> None:
    policy = load_policy(SHIPPED)
    text = render_markdown(build_ropa(policy), policy.version)
    for key in SPEC:
        assert f"## `{key}`" in text
    assert "## `customer.registration`: §4 register you as a new customer" in text
    assert "`grp:exalens-us` in US, **NOT SAFEGUARDED**" in text
    assert "(requests need the data subject's recorded opt-in)" in text
    assert policy.version in text


def test_csv_one_row_per_purpose_and_recipient(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=["g2, analytics.forecast, analytics",
                            "g3, analytics.forecast, legitimate_interest",
                            "g, usage, ceiling:analytics.forecast"])
    rows = list(csv.DictReader(io.StringIO(render_csv(build_ropa(load_policy(folder))))))
    assert {r["purpose"] for r in rows} == set(SPEC) | {"analytics.forecast"}
    lonely = [r for r in rows if r["purpose"] == "analytics.forecast"]
    assert [(r["recipient"], r["categories"]) for r in lonely] == [("", "usage")]
    us = next(r for r in rows if r["recipient"] == "grp:exalens-us")
    assert (us["transfer"], us["safeguard"]) == ("yes", "none (not safeguarded)")
