"""Lint: one broken copy of the shipped policy per error, the warnings, the shipped result."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policykit import SHIPPED, column_of, copy_policy, edit_rules, line_of

from guard._errors import PolicyError
from guard._types import Request
from guard.engine import decide
from guard.policy._findings import Finding, Severity
from guard.policy._lint import lint_policy, lint_source
from guard.policy._load import PolicyLoadError, compile_source, load_policy
from guard.policy._source import PolicySource, read_source

WEB = "p, svc:web, customer.registration, identity, read"


def _chain(base: str, extra: int, kind: str) -> list[str]:
    keys = [base]
    for i in range(extra):
        keys.append(f"{keys[-1]}.l{i}")
    return [f"{kind}, {child}, {parent}" for parent, child in itertools.pairwise(keys)]


# code, lines added, the offending line, its offending value (for the column), message part
ERRORS: list[tuple[str, list[str], str, str | None, str]] = [
    ("unknown-policy-type", ["g9, identity, category"], "g9, identity, category", "g9",
     "unknown policy type 'g9'"),
    ("wrong-arity", ["p, svc:web, customer.registration, identity"],
     "p, svc:web, customer.registration, identity", "p", "p takes 4 values, this line has 3"),
    ("empty-value", ["p, svc:web, , identity, read"], "p, svc:web, , identity, read", None,
     "value 2 of this p line is empty"),
    ("invalid-key", ["g, Identity.Nick, identity"], "g, Identity.Nick, identity",
     "Identity.Nick", "is not lower-case dot-separated ASCII"),
    ("invalid-key", ["g2, marketing.e-mail, marketing"], "g2, marketing.e-mail, marketing",
     "marketing.e-mail", "purpose key 'marketing.e-mail'"),
    ("tree-shape", ["g, nickname, identity"], "g, nickname, identity", "nickname",
     "'nickname' is not a child key of 'identity'"),
    ("tree-shape", ["g, health.notes, category"], "g, health.notes, category",
     "health.notes", "top-level category 'health.notes' contains a dot"),
    ("two-parents", ["g, identity.name, contact"], "g, identity.name, contact", "contact",
     "'identity.name' already has parent 'identity'"),
    ("cycle", ["g, loop, loop.a", "g, loop.a, loop"], "g, loop, loop.a", "loop.a",
     "category tree has a cycle: loop -> loop.a -> loop"),
    ("unknown-key", ["g, ghost.child, ghost"], "g, ghost.child, ghost", "ghost",
     "parent 'ghost' of 'ghost.child' is not in the category tree"),
    ("unknown-key", ["p, svc:web, customer.registration, identity.nick, read"],
     "p, svc:web, customer.registration, identity.nick, read", "identity.nick",
     "category 'identity.nick' is not in the category tree"),
    ("unknown-key", ["p, svc:web, customer.signup, identity, read"],
     "p, svc:web, customer.signup, identity, read", "customer.signup",
     "purpose 'customer.signup' is not in the purpose tree"),
    ("unknown-key", ["g, identity, ceiling:customer.signup"],
     "g, identity, ceiling:customer.signup", "ceiling:customer.signup",
     "ceiling names purpose 'customer.signup'"),
    ("unknown-key", ["g3, customer.signup, contract"], "g3, customer.signup, contract",
     "customer.signup", "purpose 'customer.signup' is not in the purpose tree"),
    ("tree-too-deep", _chain("identity", 9, "g"), _chain("identity", 9, "g")[-1],
     "identity.l0.l1.l2.l3.l4.l5.l6.l7.l8", "is 10 levels deep; at most 9 are allowed"),
    ("tree-too-deep", _chain("legal", 10, "g2"), _chain("legal", 10, "g2")[-1],
     "legal.l0.l1.l2.l3.l4.l5.l6.l7.l8.l9", "is 11 levels deep; at most 10 are allowed"),
    ("aggregated-has-children", ["g, aggregated.daily, aggregated"],
     "g, aggregated.daily, aggregated", "aggregated.daily", "is under 'aggregated'"),
    ("reserved-key", ["g2, contract, purpose"], "g2, contract, purpose", "contract",
     "is the name of a lawful basis"),
    ("ceiling-not-declarable", ["g, identity, ceiling:marketing"],
     "g, identity, ceiling:marketing", "ceiling:marketing", "'marketing' has no lawful basis"),
    ("basis-on-grouping", ["g3, marketing, consent"], "g3, marketing, consent", "marketing",
     "'marketing' is a grouping node"),
    ("ceiling-wider-than-parent", ["g, profile, ceiling:order.processing.payments"],
     "g, profile, ceiling:order.processing.payments", "profile",
     "'profile' is in the ceiling of 'order.processing.payments' but not of its parent "
     "'order.processing'"),
    ("unknown-lawful-basis", ["g3, analytics.improvement, curiosity"],
     "g3, analytics.improvement, curiosity", "curiosity", "unknown lawful basis 'curiosity'"),
    ("grant-outside-ceiling", ["p, svc:analytics, analytics.improvement, identity, read"],
     "p, svc:analytics, analytics.improvement, identity, read", "identity",
     "'identity' is outside the ceiling of 'analytics.improvement'"),
    ("grant-outside-ceiling", ["p, svc:marketing, marketing, financial, read"],
     "p, svc:marketing, marketing, financial, read", "financial",
     "outside the ceilings of the purposes under 'marketing'"),
    ("grant-on-special", ["p, svc:support, rights.request, special.health, read"],
     "p, svc:support, rights.request, special.health, read", "special.health",
     "'special.health' is a special category"),
    ("grant-on-special", ["p, svc:support, rights.request, special, read"],
     "p, svc:support, rights.request, special, read", "special", "'special' is a special"),
    ("ceiling-on-special", ["g, special, ceiling:rights.request"],
     "g, special, ceiling:rights.request", "special", "'special' is a special category"),
    ("grant-on-aggregated", ["p, svc:web, customer.registration, aggregated, read"],
     "p, svc:web, customer.registration, aggregated, read", "aggregated",
     "'aggregated' needs no grant"),
    ("grant-on-root", ["p, svc:web, purpose, identity, read"],
     "p, svc:web, purpose, identity, read", "purpose", "cannot name the root 'purpose'"),
    ("grant-on-root", ["p, svc:web, customer.registration, category, read"],
     "p, svc:web, customer.registration, category, read", "category",
     "cannot name the root 'category'"),
    ("ceiling-on-root", ["g, category, ceiling:rights.request"],
     "g, category, ceiling:rights.request", "category", "cannot name the root 'category'"),
    ("unknown-action", ["p, svc:web, customer.registration, identity, delete"],
     "p, svc:web, customer.registration, identity, delete", "delete",
     "unknown action 'delete'"),
    ("grant-without-party", ["p, svc:ghost, customer.registration, identity, read"],
     "p, svc:ghost, customer.registration, identity, read", "svc:ghost",
     "'svc:ghost' has no party line (g4)"),
    ("two-party-types", ["g4, svc:web, processor"], "g4, svc:web, processor", "processor",
     "svc:web already has party type internal"),
    ("unknown-party-type", ["g4, svc:new, partner"], "g4, svc:new, partner", "partner",
     "unknown party type 'partner'"),
    ("party-purpose", ["p, grp:exalens-nl, legal.compliance, identity, read"],
     "p, grp:exalens-nl, legal.compliance, identity, read", "legal.compliance",
     "grp:exalens-nl (group) may act under business.administration only"),
    ("party-purpose", ["p, adv:accountants, order.processing, financial, read"],
     "p, adv:accountants, order.processing, financial, read", "order.processing",
     "adv:accountants (adviser) may act under legal.compliance only"),
    ("party-purpose", ["p, auth:hmrc, rights.request, identity, read"],
     "p, auth:hmrc, rights.request, identity, read", "rights.request",
     "auth:hmrc (authority) may act under legal.compliance only"),
    ("party-purpose", ["p, grp:exalens-nl, business, identity, read"],
     "p, grp:exalens-nl, business, identity, read", "business",
     "may act under business.administration only, not 'business'"),
    ("processor-grant-on-grouping", ["p, proc:cloudhost, business, identity, read"],
     "p, proc:cloudhost, business, identity, read", "business",
     "proc:cloudhost is a processor and 'business' is not a declarable purpose"),
    ("unknown-country", ["g4, svc:new, internal", "g5, svc:new, UK"], "g5, svc:new, UK", "UK",
     "unknown country 'UK'"),
    ("unknown-country", ["g5, ZZ, adequate"], "g5, ZZ, adequate", "ZZ",
     "unknown country 'ZZ'"),
    ("missing-country", ["g4, svc:new, internal"], "g4, svc:new, internal", "svc:new",
     "svc:new has no country"),
    ("two-countries", ["g5, svc:web, FR"], "g5, svc:web, FR", "FR",
     "svc:web already has country GB"),
    ("unknown-mechanism", ["g5, grp:exalens-us, bcr"], "g5, grp:exalens-us, bcr", "bcr",
     "'bcr' is neither a country nor a transfer mechanism"),
    ("unknown-caller", ["g5, svc:ghost, GB"], "g5, svc:ghost, GB", "svc:ghost",
     "'svc:ghost' has no party line (g4)"),
    ("unknown-transfer-line", ["g5, FR, good"], "g5, FR, good", "good",
     "a country line must read 'g5, FR, adequate'"),
    ("invalid-caller", ["g4, adequate, internal"], "g4, adequate, internal", "adequate",
     "reads as a country or a transfer keyword"),
]


def _codes_at(findings: list[Finding], line: int | None) -> list[str]:
    return [f.code for f in findings if f.line == line]


@pytest.mark.parametrize(("code", "lines", "culprit", "value", "message"), ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_each_error_names_line_column_and_message(
    tmp_path: Path, code: str, lines: list[str], culprit: str, value: str | None, message: str
) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=lines)
    line = line_of(folder, culprit)
    findings = lint_policy(folder)
    hits = [f for f in findings if f.code == code and f.line == line]
    assert hits, f"{code} not reported on line {line}: {[str(f) for f in findings]}"
    finding = hits[0]
    assert finding.severity is Severity.ERROR
    assert message in finding.message
    assert finding.hint
    assert finding.path == str(folder / "rules.csv")
    if value is not None:
        assert finding.column == column_of(folder, line, value)
    with pytest.raises(PolicyLoadError) as refused:  # a policy with errors never loads
        load_policy(folder)
    assert code in {f.code for f in refused.value.findings}


def test_duplicate_line_points_at_the_second_copy(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    first = line_of(folder, WEB)
    edit_rules(folder, add=[WEB])
    last = len((folder / "rules.csv").read_text().splitlines())
    dup = [f for f in lint_policy(folder) if f.code == "duplicate-line"]
    assert [(f.line, f.column, f.message) for f in dup] == [(last, 1, f"duplicate of line {first}")]


@pytest.mark.parametrize("builtin", ["aggregated", "special"])
def test_missing_builtin_category(tmp_path: Path, builtin: str) -> None:
    folder = copy_policy(tmp_path)
    text = (folder / "rules.csv").read_text()
    # drop the node and everything under it
    kept = [ln for ln in text.splitlines()
            if not ln.startswith((f"g, {builtin},", f"g, {builtin}."))]
    (folder / "rules.csv").write_text("\n".join(kept) + "\n")
    hits = [f for f in lint_policy(folder) if f.code == "missing-builtin-category"]
    assert len(hits) == 1
    assert hits[0].line is None
    assert f"no top-level {builtin!r} node" in hits[0].message


def test_missing_country_points_at_the_party_line(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, drop=["g5, svc:web, GB"])
    hits = [f for f in lint_policy(folder) if f.code == "missing-country"]
    assert [(f.line, f.message) for f in hits] == [
        (line_of(folder, "g4, svc:web, internal"), "svc:web has no country")]


def test_unbalanced_bracket_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    bad = "p, svc:web), customer.registration, identity, read"
    edit_rules(folder, add=[bad])
    line = line_of(folder, bad)
    hits = [f for f in lint_policy(folder) if f.code == "malformed-line"]
    assert [(f.line, f.column) for f in hits] == [(line, bad.index(")") + 1)]


def test_unreadable_model_is_one_finding(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    (folder / "model.conf").write_text("[request_definition]\nr = sub\n")
    findings = lint_policy(folder)
    assert [(f.code, f.path) for f in findings] == [
        ("model-unreadable", str(folder / "model.conf"))]


def test_missing_rules_file_is_a_policy_error(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    (folder / "rules.csv").unlink()
    with pytest.raises(PolicyError, match=r"rules\.csv not found"):
        lint_policy(folder)


# --- warnings ---------------------------------------------------------------------------

def test_shipped_policy_has_exactly_the_transfer_warning() -> None:
    source = read_source(SHIPPED)
    findings = [f for f in lint_source(source) if f.path.endswith("rules.csv")]
    line = line_of(SHIPPED, "g5, grp:exalens-us, US")
    assert [(f.severity, f.code, f.line, f.column) for f in findings] == [
        (Severity.WARNING, "transfer-not-safeguarded", line, column_of(SHIPPED, line, "US"))]
    assert "grp:exalens-us is in US" in findings[0].message
    assert load_policy(SHIPPED).findings == tuple(findings)


WARNINGS: list[tuple[str, list[str], str, str]] = [
    ("redundant-grant", ["p, svc:marketing, marketing.advertising, identity.name, read"],
     "p, svc:marketing, marketing.advertising, identity.name, read",
     "already granted by line {p, svc:marketing, marketing, identity, read}"),
    ("unusable-grant", ["g2, marketing.sms, marketing", "g3, marketing.sms, consent",
                        "g, contact, ceiling:marketing.sms",
                        "p, svc:crm, marketing.sms, contact.phone, read"],
     "p, svc:crm, marketing.sms, contact.phone, read", "needs consent"),
    ("ungranted-purpose", ["g2, analytics.forecast, analytics",
                           "g3, analytics.forecast, legitimate_interest",
                           "g, usage, ceiling:analytics.forecast"],
     "g3, analytics.forecast, legitimate_interest", "no caller is granted 'analytics.forecast'"),
    ("empty-ceiling", ["g2, analytics.forecast, analytics",
                       "g3, analytics.forecast, legitimate_interest"],
     "g3, analytics.forecast, legitimate_interest", "has no ceiling"),
    ("no-declarable-purpose", ["g2, archive, purpose"], "g2, archive, purpose",
     "no declarable purpose under it"),
    ("aggregated-in-ceiling", ["g, aggregated, ceiling:analytics.improvement"],
     "g, aggregated, ceiling:analytics.improvement", "'aggregated' needs no ceiling"),
    ("transfer-not-safeguarded", ["g4, proc:sms, processor", "g5, proc:sms, BR",
                                  "p, proc:sms, marketing.advertising, contact.phone, read"],
     "g5, proc:sms, BR", "proc:sms is in BR"),
]


@pytest.mark.parametrize(("code", "lines", "culprit", "message"), WARNINGS,
                         ids=[w[0] for w in WARNINGS])
def test_each_warning_loads_and_is_reported(
    tmp_path: Path, code: str, lines: list[str], culprit: str, message: str
) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=lines)
    if "{" in message:  # a line number to look up
        head, ref = message.split("{")
        message = head + str(line_of(folder, ref.rstrip("}")))
    line = line_of(folder, culprit)
    policy = load_policy(folder)  # warnings load
    hits = [f for f in policy.findings if f.code == code and f.line == line]
    assert hits, [str(f) for f in policy.findings]
    assert hits[0].severity is Severity.WARNING
    assert message in hits[0].message
    assert hits[0].hint


def test_transfer_warning_not_repeated_as_unusable_grants() -> None:
    codes = [f.code for f in load_policy(SHIPPED).findings]
    assert codes == ["transfer-not-safeguarded"]


def test_routes_naming_unknown_or_special_categories(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    routes = [
        "# method, path, categories, action, subject",
        "GET,  /healthz, public",
        "GET,  /a/{id}, identity contact, read, id",
        "GET,  /b/{id}, identity;loyalty|contact.mail, read, id",
        'GET,  /c, "special.health", read',
        "BROKEN LINE",
    ]
    (folder / "routes.csv").write_text("\n".join(routes) + "\n")
    found = [(f.code, f.line, f.column, f.severity) for f in lint_policy(folder)
             if f.path.endswith("routes.csv")]
    assert found == [
        ("route-refused", 4, routes[3].index("identity") + 1, Severity.ERROR),  # not a key
        ("route-unknown-category", 4, routes[3].index("loyalty") + 1, Severity.WARNING),
        ("route-unknown-category", 4, routes[3].index("contact.mail") + 1, Severity.WARNING),
        ("route-special-category", 5, routes[4].index("special") + 1, Severity.WARNING),
        ("route-refused", 6, len(routes[5]) + 1, Severity.ERROR),  # too few fields
    ]


def test_a_changing_method_declared_a_read_is_a_warning(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    routes = [
        "DELETE, /a/{id}, contact, , id",
        "*,      /b/{id}, contact, read, id",
        "PUT,    /c/{id}, contact, write, id",
        "POST,   /d, contact",
        "PATCH,  /e, public",
    ]
    (folder / "routes.csv").write_text("\n".join(routes) + "\n")
    found = [(f.code, f.line, f.column) for f in lint_policy(folder)
             if f.path.endswith("routes.csv")]
    assert found == [("route-changing-read", 1, 1),
                     ("route-changing-read", 2, routes[1].index("read") + 1)]


def test_compile_refuses_what_lint_refuses(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=["p, svc:web, customer.registration, special.health, read"])
    with pytest.raises(PolicyLoadError, match=r"grant-on-special"):
        compile_source(read_source(folder))


# --- robustness -------------------------------------------------------------------------

_TOKENS = ["p", "g", "g2", "g3", "g4", "g5", "x", "", "a", "a.b", "A", "ceiling:a", "ceiling:",
           "category", "purpose", "special", "special.s", "aggregated", "GB", "US", "FR",
           "adequate", "idta", "svc:x", "read", "write", "contract", "consent", "internal",
           "group", "x(", ")", "[y]", "a..b", " "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=6), max_size=25))
def test_lint_never_crashes_and_a_clean_result_loads(lines: list[list[str]]) -> None:
    text = "\n".join(", ".join(line) for line in lines)
    source = PolicySource((SHIPPED / "model.conf").read_text(), text, "m.conf", "r.csv")
    findings = lint_source(source)
    assert all(f.path in {"m.conf", "r.csv"} for f in findings)
    if not any(f.severity is Severity.ERROR for f in findings):
        policy = compile_source(source)
        for caller in policy.parties:
            decide(policy, Request(caller, "a", ("a",)))


def test_unknown_model_types_only_get_the_structure_checked(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    model = (folder / "model.conf").read_text().replace("g5 = _, _\n", "")
    (folder / "model.conf").write_text(model.replace(' || g5(r.sub, "GB") || g5(r.sub, '
                                                     '"adequate")', ""))
    codes = {f.code for f in lint_policy(folder)}
    assert "model-not-recognised" in codes
    assert "unknown-policy-type" in codes  # the g5 lines
