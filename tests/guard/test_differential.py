"""The compiled engine answers exactly what casbin's own Enforcer answers.

hypothesis builds random policies for the shipped model.conf (random category and
purpose trees, ceilings, lawful bases, parties, transfers, grants) and random requests,
and compares ``decide(...).allowed`` with ``casbin.Enforcer(model, rules).enforce(...)``
for every category of the request (a request is allowed iff all its categories are).

The requests name no data subject, and ``decide`` is given a subject register full of
entries: the register (checks 10-13) applies only to requests that name a subject.
Check 9 (``consent_required``) needs no oracle change: casbin's matcher accepts only
the non-consent bases, so it too refuses a purpose whose only basis is consent.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Guard
from guard._types import Action, Request
from guard.engine import decide
from guard.policy import PolicySource, compile_source, load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from tests.guard.audit.conftest import keys_at, make_trail

# Entries for a subject no request names: they must change nothing here.
REGISTER = Register(b"d" * 32)
REGISTER.apply(REGISTER.pseudonym("s-1"), [
    Record(kind, purpose, date(2020, 1, 1)) for kind, purpose in (
        (EntryKind.RESTRICTION, ""), (EntryKind.ERASURE_REQUESTED, ""),
        (EntryKind.END_OF_RELATIONSHIP, ""), (EntryKind.OBJECTION, "g0"),
        (EntryKind.CONSENT_GRANTED, "g0"))
])

MODEL = Path(__file__).resolve().parents[2] / "policies" / "model.conf"
MECHANISMS = ("idta", "uk_addendum")
BASES = ("contract", "legal_obligation", "legitimate_interest", "vital_interests", "public_task")
COUNTRIES = ("GB", "IE", "NL", "DE", "JP", "CA", "US", "IN", "BR", "CN", "AU")
# Party types with a fixed purpose (POLICY-SPEC §1 Parties); the others may hold any.
FIXED_PURPOSE = {"group": "business.administration", "adviser": "legal.compliance",
                 "authority": "legal.compliance"}


@dataclass
class Generated:
    """A random policy: its rules.csv text and the names requests may use."""

    rules: str
    callers: list[str]
    purposes: list[str]
    categories: list[str]
    declarable: list[str]
    grants: list[tuple[str, str, str, str]]


@st.composite
def category_tree(draw: st.DrawFn) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(g rows, personal nodes, top-level personal roots); special and aggregated included."""
    rows: list[tuple[str, str]] = []
    nodes: list[str] = []
    roots = [f"c{i}" for i in range(draw(st.integers(1, 4)))]
    for root in roots:
        rows.append((root, "category"))
        nodes.append(root)
        for j in range(draw(st.integers(0, 3))):
            child = f"{root}.k{j}"
            rows.append((child, root))
            nodes.append(child)
            for m in range(draw(st.integers(0, 2))):
                rows.append((f"{child}.l{m}", child))
                nodes.append(f"{child}.l{m}")
    rows.append(("special", "category"))
    rows += [(f"special.s{i}", "special") for i in range(draw(st.integers(0, 3)))]
    rows.append(("aggregated", "category"))
    return rows, nodes, roots


@st.composite
def policies(draw: st.DrawFn) -> Generated:
    """A random policy that should pass lint."""
    cat_rows, cat_nodes, cat_roots = draw(category_tree())
    lines = [f"g, {child}, {parent}" for child, parent in cat_rows]

    # Purpose tree: first segments are groupings; business.administration and
    # legal.compliance always exist so fixed-purpose party types can be granted.
    parent: dict[str, str] = {}
    for grouping, children in (("business", ["business.administration"]),
                               ("legal", ["legal.compliance"])):
        parent[grouping] = "purpose"
        for child in children:
            parent[child] = grouping
    for i in range(draw(st.integers(1, 3))):
        grouping = f"g{i}"
        parent[grouping] = "purpose"
        for j in range(draw(st.integers(1, 3))):
            child = f"{grouping}.p{j}"
            parent[child] = grouping
            for m in range(draw(st.integers(0, 2))):
                parent[f"{child}.q{m}"] = child
    lines += [f"g2, {child}, {up}" for child, up in parent.items()]

    # Ceilings (a child's within its parent's) and lawful bases (sometimes consent only).
    ceiling: dict[str, list[str]] = {}
    declarable = [p for p, up in parent.items() if up != "purpose"]
    for purpose in declarable:  # parents come before their children in `parent`
        up = parent[purpose]
        allowed = ceiling.get(up, cat_roots)
        # Often strictly narrower than the parent's, so that the child's own ceiling matters.
        chosen = draw(st.lists(st.sampled_from(allowed), min_size=1,
                               max_size=max(1, len(allowed) - draw(st.integers(0, 1))),
                               unique=True))
        narrow = [n for n in cat_nodes if n.startswith(chosen[0] + ".")]
        if narrow and draw(st.booleans()):  # sometimes a narrower node than a whole root
            chosen[0] = draw(st.sampled_from(narrow))
        ceiling[purpose] = chosen
        lines += [f"g, {cat}, ceiling:{purpose}" for cat in chosen]
        if draw(st.integers(0, 4)) == 0:
            bases = ["consent"]
        else:
            bases = draw(st.lists(st.sampled_from(BASES), min_size=1, max_size=2, unique=True))
            if draw(st.integers(0, 5)) == 0:
                bases.append("consent")
        lines += [f"g3, {purpose}, {basis}" for basis in bases]

    def covered(purpose: str) -> list[str]:
        """Category nodes a grant on ``purpose`` may name: inside its (descendants') ceiling."""
        roots = set(ceiling.get(purpose, ()))
        if not roots:  # a grouping: the union of its descendants' ceilings
            for p, cats in ceiling.items():
                if p.startswith(purpose + "."):
                    roots |= set(cats)
        return [n for n in cat_nodes if any(n == r or n.startswith(r + ".") for r in roots)]

    # Parties, countries, adequacy, mechanisms.
    adequate = draw(st.lists(st.sampled_from([c for c in COUNTRIES if c != "GB"]), unique=True))
    lines += [f"g5, {country}, adequate" for country in adequate]
    callers: list[str] = []
    grants: set[tuple[str, str, str, str]] = set()
    for i in range(draw(st.integers(1, 5))):
        ptype = draw(st.sampled_from(("internal", "internal", "processor", "group", "adviser",
                                      "authority")))
        caller = f"{ptype[:4]}:c{i}"
        callers.append(caller)
        lines.append(f"g4, {caller}, {ptype}")
        lines.append(f"g5, {caller}, {draw(st.sampled_from(COUNTRIES))}")
        lines += [f"g5, {caller}, {m}" for m in draw(st.lists(st.sampled_from(MECHANISMS),
                                                               max_size=1))]
        # A processor acts only under declarable purposes named in its grant (§1 Parties).
        options = ([FIXED_PURPOSE[ptype]] if ptype in FIXED_PURPOSE
                   else declarable if ptype == "processor" else list(parent))
        for _ in range(draw(st.integers(1, 6))):
            purpose = draw(st.sampled_from(options))
            cats = covered(purpose)
            if cats:
                grants.add((caller, purpose, draw(st.sampled_from(cats)),
                            draw(st.sampled_from(("read", "write")))))
    lines += [f"p, {c}, {p}, {k}, {a}" for c, p, k, a in sorted(grants)]
    order = draw(st.permutations(range(len(lines))))  # casbin does not care about row order
    return Generated(
        rules="\n".join(lines[i] for i in order) + "\n",
        callers=callers,
        purposes=[*parent, "purpose", "nope", "g0.nope"],
        grants=sorted(grants),
        declarable=declarable,
        categories=[*cat_nodes, *(child for child, up in cat_rows if up == "special"),
                    "special", "aggregated", "category", "nope", "c0.nope",
                    f"ceiling:{declarable[0]}"],
    )


@st.composite
def near_grant(draw: st.DrawFn, gen: Generated) -> Request:
    """A request close to a grant (so that later checks get to run): same caller, the
    granted purpose or one under it, categories at or under the granted one plus maybe
    another, either action."""
    caller, purpose, category, action = draw(st.sampled_from(gen.grants))
    under = [p for p in gen.declarable if p == purpose or p.startswith(purpose + ".")]
    cats = [draw(st.sampled_from(
        [c for c in gen.categories if c == category or c.startswith(category + ".")]))]
    if draw(st.integers(0, 3)) == 0:
        cats.append(draw(st.sampled_from(gen.categories)))
    acted = action if draw(st.integers(0, 3)) else draw(st.sampled_from(["read", "write"]))
    return Request(caller, draw(st.sampled_from(under)), tuple(cats), Action(acted))


@st.composite
def anywhere(draw: st.DrawFn, gen: Generated) -> Request:
    """Any request over the policy's names, known or not."""
    return Request(
        draw(st.sampled_from([*gen.callers, "svc:ghost"])),
        draw(st.sampled_from(gen.purposes)),
        tuple(draw(st.lists(st.sampled_from(gen.categories), min_size=1, max_size=3))),
        draw(st.sampled_from(list(Action))),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[Generated, list[Request]]:
    gen = draw(policies())
    kinds = [*[near_grant(gen)] * 3, anywhere(gen)] if gen.grants else [anywhere(gen)]
    requests = [draw(st.one_of(kinds)) for _ in range(draw(st.integers(4, 16)))]
    return gen, requests


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(cases())
def test_engine_agrees_with_casbin_enforcer(case: tuple[Generated, list[Request]]) -> None:
    gen, requests = case
    model_text = MODEL.read_text()
    policy = compile_source(PolicySource(model_text, gen.rules, str(MODEL), "rules.csv"))
    assert policy.compiled
    with tempfile.TemporaryDirectory() as tmp:
        rules_path = Path(tmp) / "rules.csv"
        rules_path.write_text(gen.rules)
        enforcer = casbin.Enforcer(str(MODEL), str(rules_path))
    for request in requests:
        expected = all(
            enforcer.enforce(request.caller, request.purpose, cat, request.action.value)
            for cat in request.categories
        )
        assert request.subject is None
        decision = decide(policy, request, REGISTER)
        assert decision.allowed == expected, (request, decision.reason, gen.rules)


def test_differential_generator_reaches_both_verdicts() -> None:
    """The property above is only meaningful if random requests are sometimes allowed."""
    seen: set[bool] = set()

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(cases())
    def collect(case: tuple[Generated, list[Request]]) -> None:
        gen, requests = case
        policy = compile_source(PolicySource(MODEL.read_text(), gen.rules, str(MODEL),
                                             "rules.csv"))
        for request in requests:
            seen.add(decide(policy, request).allowed)
        # Steer towards a granted request too: every grant line asked as written.
        for line in gen.rules.splitlines():
            if line.startswith("p, "):
                _, caller, purpose, cat, action = (v.strip() for v in line.split(","))
                seen.add(decide(policy, Request(caller, purpose, (cat,), Action(action))).allowed)

    collect()
    assert seen == {True, False}


@pytest.mark.parametrize(
    ("extra", "request_", "allowed"),
    [
        # aggregated is readable under any granted purpose, whatever the transfer.
        ("", Request("proc:c0", "g0.p0", ("aggregated",)), True),
        ("", Request("proc:c0", "g0.p0", ("aggregated",), Action.WRITE), False),
        ("", Request("proc:c0", "g0", ("aggregated",)), False),
        ("g2, g0.p1, g0\ng3, g0.p1, contract\n", Request("proc:c0", "g0.p1", ("aggregated",)),
         False),
    ],
)
def test_engine_agrees_on_aggregated(extra: str, request_: Request, allowed: bool,
                                     tmp_path: Path) -> None:
    rules = ("g, c0, category\ng, aggregated, category\ng, special, category\n"
             "g2, g0, purpose\ng2, g0.p0, g0\ng3, g0.p0, contract\ng, c0, ceiling:g0.p0\n"
             "g4, proc:c0, processor\ng5, proc:c0, US\np, proc:c0, g0.p0, c0, read\n" + extra)
    (tmp_path / "rules.csv").write_text(rules)
    enforcer = casbin.Enforcer(str(MODEL), str(tmp_path / "rules.csv"))
    policy = compile_source(PolicySource(MODEL.read_text(), rules, str(MODEL), "rules.csv"))
    expected = enforcer.enforce(request_.caller, request_.purpose, "aggregated",
                                request_.action.value)
    assert expected == allowed
    assert decide(policy, request_).allowed == allowed


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    """One guard for every generated policy: each example reloads its own into it."""
    tmp = tmp_path_factory.mktemp("differential")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=b"d" * 32, journal=tmp / "audit.db.journal")
    g = Guard(PolicyHolder(lambda: load_policy(MODEL.parent)), trail, hmac_key=b"d" * 32,
              register=REGISTER)
    yield g
    g.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(cases())
def test_guard_decide_agrees_with_casbin_enforcer(
    guard: Guard, case: tuple[Generated, list[Request]]
) -> None:
    """Guard.decide, which remembers decisions per policy, against casbin, across reloads.

    The generated policies reuse the same names (``proc:c0``, ``g0.p0``, ``c0``), so a
    decision remembered from an earlier example's policy would show here.
    """
    gen, requests = case
    policy = compile_source(PolicySource(MODEL.read_text(), gen.rules, str(MODEL), "rules.csv"))
    assert guard.holder.reload(lambda: policy).ok
    with tempfile.TemporaryDirectory() as tmp:
        rules_path = Path(tmp) / "rules.csv"
        rules_path.write_text(gen.rules)
        enforcer = casbin.Enforcer(str(MODEL), str(rules_path))
    for request in [*requests, *requests]:  # the second time, remembered
        expected = all(
            enforcer.enforce(request.caller, request.purpose, cat, request.action.value)
            for cat in request.categories
        )
        decision = guard.decide(request).decision
        assert decision.allowed == expected, (request, decision.reason, gen.rules)
        assert decision.policy_version == policy.version
