"""A policy that lints without errors decides exactly as casbin's Enforcer does.

Small policies are built from a valid core plus random lines drawn from a pool
of near-misses (wrong parents, unknown keys, reserved names, odd g5 lines...).
Whenever the lint lets one load, the compiled engine must agree with
``casbin.Enforcer(model.conf, rules.csv)`` on every request; when it does not,
loading must fail (a broken policy never yields an allow).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policykit import SHIPPED

from guard._types import Action, Request
from guard.engine import decide
from guard.policy import PolicyLoadError, compile_policy
from guard.policy._lint_base import MAX_CATEGORY_LEVELS, MAX_PURPOSE_LEVELS

MODEL = (SHIPPED / "model.conf").read_text()

CORE = [
    "g, a, category", "g, a.b, a", "g, a.b.c, a.b", "g, d, category", "g, special, category",
    "g, special.x, special", "g, aggregated, category",
    "g2, m, purpose", "g2, m.x, m", "g2, m.x.y, m.x", "g2, n, purpose", "g2, n.z, n",
    "g3, m.x, contract", "g3, m.x.y, legitimate_interest", "g3, n.z, consent",
    "g, a, ceiling:m.x", "g, a.b, ceiling:m.x.y", "g, d, ceiling:n.z",
    "g4, c1, internal", "g4, c2, processor", "g4, c3, group",
    "g5, c1, GB", "g5, c2, US", "g5, c2, idta", "g5, c3, FR", "g5, FR, adequate",
    "p, c1, m, a, read", "p, c2, m.x.y, a.b, write", "p, c1, n.z, d, read",
]
POOL = [
    "g, a.b.c, a", "g, e, a", "g, a.q, category", "g, aggregated.k, aggregated",
    "g, special, a", "g, a, special", "g, d, ceiling:m.x", "g, category, ceiling:m.x",
    "g, special.x, ceiling:m.x", "g, aggregated, ceiling:m.x", "g, a, ceiling:m",
    "g, a, ceiling:zz", "g, a.b, d", "g, d.e, d", "g, d.e, ceiling:m.x.y",
    "g2, m.x, n", "g2, contract, purpose", "g2, m.w, m", "g2, n.z.q, n.z", "g2, m, m.x",
    "g3, m, contract", "g3, m.w, public_task", "g3, m.x, consent", "g3, n.z, vital_interests",
    "g3, zz, contract", "g3, m.x, friendship", "g3, contract, contract",
    "g4, c2, internal", "g4, c4, adviser", "g4, GB, internal", "g4, c1, alien",
    "g5, c1, FR", "g5, c3, uk_addendum", "g5, US, adequate", "g5, c1, XX", "g5, c4, GB",
    "g5, FR, c1", "g5, c9, GB", "g5, c2, bcr",
    "p, c1, m.x, a.b.c, read", "p, c1, m.x, a, write", "p, c2, m, a, read",
    "p, c3, m.x, a, read", "p, c3, business.administration, a, read",
    "p, c1, m.x, aggregated, read", "p, c1, m.x, special.x, read", "p, c1, category, a, read",
    "p, c1, purpose, a, read", "p, c1, m.x, d, read", "p, c9, m.x, a, read",
    "p, c4, m.x.y, a.b, read", "p, c1, m.x, a, delete", "p, c1, n, d, read",
    "p, c2, n.z, d, read", "p, c1, m.x.y, a.b, read", "x, c1, m, a, read", "p, c1, m, a",
]
DROPPABLE = [line for line in CORE if line.startswith("p,")] + ["g5, FR, adequate",
                                                               "g5, c2, idta"]
VALID = [  # bundles of lines that keep the core valid
    ("g, a.q, a", "p, c1, m.x, a.q, write"), ("g, d.e, d", "p, c1, n.z, d.e, read"),
    ("g2, m.w, m", "g3, m.w, public_task", "g, a, ceiling:m.w"),
    ("g3, m.x, consent",), ("g3, n.z, vital_interests",), ("g4, c4, adviser", "g5, c4, GB"),
    ("g5, c3, uk_addendum",), ("g5, US, adequate",), ("p, c1, m.x, a.b.c, read",),
    ("p, c1, m.x, a, write",), ("p, c2, m.x.y, a.b.c, write",), ("p, c1, m.x.y, a.b, read",),
    ("p, c2, n.z, d, read",), ("g, d, ceiling:m.x", "p, c1, m.x, d, read"),
    ("g2, n.v, n", "g3, n.v, legal_obligation", "g, d, ceiling:n.v", "p, c1, n, d, write"),
    ("p, c2, m.x.y, a.b, read",), ("g4, c5, internal", "g5, c5, JP", "p, c5, m.x, a.b, read"),
]
CALLERS = ["c1", "c2", "c3", "c4", "c5", "GB"]
PURPOSES = ["m", "m.x", "m.x.y", "m.w", "n", "n.z", "n.z.q", "zz", "contract", "purpose"]
CATEGORIES = ["a", "a.b", "a.b.c", "a.q", "d", "d.e", "e", "special", "special.x",
              "aggregated", "aggregated.k", "category"]


def _agree(rules: list[str]) -> None:
    text = "\n".join(rules) + "\n"
    try:
        policy = compile_policy(MODEL, text)
    except PolicyLoadError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.conf").write_text(MODEL)
        (Path(tmp) / "rules.csv").write_text(text)
        enforcer = casbin.Enforcer(str(Path(tmp) / "model.conf"), str(Path(tmp) / "rules.csv"))
    for caller in CALLERS:
        for purpose in PURPOSES:
            for category in CATEGORIES:
                for action in Action:
                    ours = decide(policy, Request(caller, purpose, (category,), action)).allowed
                    theirs = bool(enforcer.enforce(caller, purpose, category, action.value))
                    assert ours == theirs, (caller, purpose, category, action, text)


def test_core_loads_and_agrees() -> None:
    policy = compile_policy(MODEL, "\n".join(CORE))
    assert [(f.code, f.line) for f in policy.findings] == [("unusable-grant", len(CORE))]
    _agree(CORE)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drop=st.sets(st.sampled_from(DROPPABLE), max_size=3),
    extra=st.lists(st.sampled_from(VALID), max_size=6, unique=True),
    bad=st.lists(st.sampled_from(POOL), max_size=2, unique=True),
)
def test_loaded_policy_decides_as_casbin(
    drop: set[str], extra: list[tuple[str, ...]], bad: list[str]
) -> None:
    lines = [line for line in CORE if line not in drop]
    lines += [line for bundle in extra for line in bundle if line not in lines]
    _agree(lines + bad)


def _chain(prefix: str, levels: int) -> list[str]:
    return [".".join([prefix] + [f"l{i}" for i in range(1, n)]) for n in range(1, levels + 1)]


@pytest.mark.parametrize(("cat_levels", "pur_levels", "loads"), [
    (MAX_CATEGORY_LEVELS, MAX_PURPOSE_LEVELS, True),
    (MAX_CATEGORY_LEVELS + 1, MAX_PURPOSE_LEVELS, False),
    (MAX_CATEGORY_LEVELS, MAX_PURPOSE_LEVELS + 1, False),
])
def test_depth_limit_is_casbins(cat_levels: int, pur_levels: int, loads: bool) -> None:
    """At the deepest trees lint allows, casbin still sees every link the engine uses."""
    cats, purs = _chain("k", cat_levels), _chain("q", pur_levels)
    rules = [line for line in CORE if not line.startswith("p,")]
    rules += [f"g, {c}, {p}" for c, p in zip(cats, ["category", *cats], strict=False)]
    rules += [f"g2, {c}, {p}" for c, p in zip(purs, ["purpose", *purs], strict=False)]
    rules += [f"g3, {p}, contract" for p in purs[1:]]
    rules += [f"g, k, ceiling:{p}" for p in purs[1:]]
    rules += ["p, c1, q, k, read"]
    text = "\n".join(rules)
    if not loads:
        with pytest.raises(PolicyLoadError) as caught:
            compile_policy(MODEL, text)
        assert "tree-too-deep" in {f.code for f in caught.value.findings}
        return
    policy = compile_policy(MODEL, text)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.conf").write_text(MODEL)
        (Path(tmp) / "rules.csv").write_text(text)
        enforcer = casbin.Enforcer(str(Path(tmp) / "model.conf"), str(Path(tmp) / "rules.csv"))
    deepest_cat, deepest_pur = cats[-1], purs[-1]
    assert decide(policy, Request("c1", deepest_pur, (deepest_cat,))).allowed
    assert enforcer.enforce("c1", deepest_pur, deepest_cat, "read")
