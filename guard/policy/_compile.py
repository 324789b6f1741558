"""Turn parsed rows into the immutable look-up tables of a CompiledPolicy."""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from functools import cache
from types import MappingProxyType
from typing import TypeVar

from casbin.model import Model

from guard._errors import PolicyError
from guard.policy._compiled import (
    ADEQUATE,
    CATEGORY_ROOT,
    CEILING_PREFIX,
    HOME_COUNTRY,
    MECHANISMS,
    PURPOSE_ROOT,
    SPECIAL,
    Category,
    CompiledPolicy,
    GrantKey,
    Party,
    Purpose,
)
from guard.policy._findings import Finding
from guard.policy._source import MODEL_FILE, SHIPPED_DIR, PolicySource, Row
from guard.policy._survival import SURVIVES_PREFIX, Survival

K = TypeVar("K")
V = TypeVar("V")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
MAX_HIERARCHY = 10  # casbin's default role-manager depth


def parse_model(text: str, origin: str) -> Model:
    """Parse model.conf with pycasbin; a model casbin cannot read is a PolicyError."""
    model = Model()
    try:
        model.load_model_from_text(text)
    except Exception as exc:  # casbin raises bare exceptions of several kinds
        raise PolicyError(f"casbin cannot read the model: {exc}", path=origin) from None
    for section in ("r", "p", "e", "m"):
        if section not in model.model:
            raise PolicyError(f"model has no [{_SECTION_NAMES[section]}] section", path=origin)
    return model


_SECTION_NAMES = {
    "r": "request_definition",
    "p": "policy_definition",
    "e": "policy_effect",
    "m": "matchers",
    "g": "role_definition",
}


def model_signature(model: Model) -> tuple[tuple[str, str, str], ...]:
    """What the model means, without comments and spacing."""
    return tuple(
        (sec, key, re.sub(r"\s+", "", str(model.model[sec][key].value)))
        for sec in ("r", "p", "g", "e", "m")
        if sec in model.model
        for key in sorted(model.model[sec])
    )


@cache
def _shipped_signature() -> tuple[tuple[str, str, str], ...]:
    path = SHIPPED_DIR / MODEL_FILE
    return model_signature(parse_model(path.read_text(encoding="utf-8"), str(path)))


def is_recognised(model: Model) -> bool:
    """True when the model is the one the compiled engine implements."""
    return model_signature(model) == _shipped_signature()


def _ancestors(key: str, parent: Mapping[str, str], root: str) -> tuple[str, ...]:
    chain = [key]
    node = key
    while (up := parent.get(node)) is not None and up != root and up not in chain:
        chain.append(up)
        node = up
    return tuple(chain)


def _reach(start: str, edges: Mapping[str, list[str]]) -> set[str]:
    """Nodes reachable from ``start`` in at most casbin's hierarchy depth."""
    seen = {start}
    frontier = deque([(start, 0)])
    while frontier:
        node, depth = frontier.popleft()
        if depth >= MAX_HIERARCHY:
            continue
        for nxt in edges.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, depth + 1))
    return seen


def _freeze(mapping: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(mapping))


def compile_rows(
    source: PolicySource,
    rows: Iterable[Row],
    *,
    findings: tuple[Finding, ...] = (),
    enforcer: object = None,
) -> CompiledPolicy:
    """Build the look-up tables. Assumes the rows passed lint without errors."""
    rows = tuple(rows)
    by_type: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_type[row.ptype].append(row)

    # Category tree and purpose ceilings share casbin's `g`.
    cat_parent: dict[str, str] = {}
    ceiling_roots: dict[str, list[str]] = defaultdict(list)
    for row in by_type["g"]:
        child, parent = row.values[0], row.values[1]
        if parent.startswith(CEILING_PREFIX):
            ceiling_roots[parent.removeprefix(CEILING_PREFIX)].append(child)
        else:
            cat_parent.setdefault(child, parent)
    cat_keys = set(cat_parent) | {p for p in cat_parent.values() if p != CATEGORY_ROOT}
    categories = {
        key: Category(key, anc := _ancestors(key, cat_parent, CATEGORY_ROOT), SPECIAL in anc)
        for key in cat_keys
    }

    pur_parent: dict[str, str] = {}
    for row in by_type["g2"]:
        pur_parent.setdefault(row.values[0], row.values[1])
    bases: dict[str, list[str]] = defaultdict(list)
    survival: dict[str, Survival] = {}
    for row in by_type["g3"]:
        if row.values[1].startswith(SURVIVES_PREFIX):
            survival.setdefault(row.values[0], Survival(
                row.values[0], row.values[1].removeprefix(SURVIVES_PREFIX), row.location))
            continue
        if row.values[1] not in bases[row.values[0]]:
            bases[row.values[0]].append(row.values[1])
    pur_keys = set(pur_parent) | {p for p in pur_parent.values() if p != PURPOSE_ROOT}
    purposes: dict[str, Purpose] = {}
    for key in pur_keys:
        roots = tuple(dict.fromkeys(ceiling_roots.get(key, ())))
        covered = frozenset(
            c for c, cat in categories.items() if any(a in roots for a in cat.ancestors)
        )
        ancestors = _ancestors(key, pur_parent, PURPOSE_ROOT)
        purposes[key] = Purpose(key, ancestors, tuple(bases.get(key, ())), covered, roots)

    party_type: dict[str, str] = {}
    for row in by_type["g4"]:
        party_type.setdefault(row.values[0], row.values[1])
    g5_edges: dict[str, list[str]] = defaultdict(list)
    for row in by_type["g5"]:
        g5_edges[row.values[0]].append(row.values[1])
    raw_grants: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for row in by_type["p"]:
        caller, granted, category, action = row.values[:4]
        raw_grants[(caller, granted)].append((category, action, row.location))

    callers = set(party_type) | {caller for caller, _ in raw_grants}
    safe_targets = {HOME_COUNTRY, ADEQUATE, *MECHANISMS}
    parties: dict[str, Party] = {}
    for caller in callers:
        direct = g5_edges.get(caller, [])
        country = next((t for t in direct if COUNTRY_RE.match(t)), None)
        mechanisms = tuple(t for t in direct if t in MECHANISMS)
        safe = bool(_reach(caller, g5_edges) & safe_targets)
        parties[caller] = Party(caller, party_type.get(caller), country, mechanisms, safe)

    # Merge each caller's grants down the purpose tree, visiting only the purposes
    # under something the caller holds (not every caller x every purpose).
    under: dict[str, list[str]] = defaultdict(list)  # node -> itself and its descendants
    for key, purpose in purposes.items():
        for ancestor in purpose.ancestors:
            under[ancestor].append(key)
    held: dict[str, set[str]] = defaultdict(set)
    for caller, granted in raw_grants:
        held[caller].update(under.get(granted, ()))
    grants: dict[tuple[str, str], Mapping[GrantKey, tuple[str, ...]]] = {}
    joined: dict[tuple[str, str], tuple[Party, Mapping[GrantKey, tuple[str, ...]]]] = {}
    for caller, keys in held.items():
        party = parties[caller]
        for key in keys:
            merged: dict[GrantKey, list[str]] = defaultdict(list)
            for ancestor in purposes[key].ancestors:
                for category, action, location in raw_grants.get((caller, ancestor), ()):
                    merged[(category, action)].append(location)
            table = {k: tuple(v) for k, v in merged.items()}
            grants[(caller, key)] = MappingProxyType(table)
            joined[(caller, key)] = (party, table)  # read-only: only the engine sees it

    return CompiledPolicy(
        source=source,
        version=source.version,
        rows=rows,
        categories=_freeze(categories),
        purposes=_freeze(purposes),
        parties=_freeze(parties),
        grants=_freeze(grants),
        joined=_freeze(joined),
        findings=findings,
        survival=_freeze(survival),
        enforcer=enforcer,
    )
