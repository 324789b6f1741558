"""Lint of the grants (``p`` lines): keys, ceilings, parties, and what no one can use."""

from __future__ import annotations

from guard.policy._compiled import AGGREGATED, CATEGORY_ROOT, PURPOSE_ROOT, SPECIAL
from guard.policy._lint_base import ACTIONS, PARTY_PURPOSES, Linter, Tree
from guard.policy._lint_parties import Parties
from guard.policy._lint_trees import Purposes
from guard.policy._source import Row


def _in_scope(category: str, purpose: str, categories: Tree, purposes: Purposes) -> bool:
    """Whether a grant of ``category`` on ``purpose`` stays within the ceiling(s)."""
    if purposes.declarable(purpose):
        return category in purposes.ceiling.get(purpose, ())
    return any(category in purposes.ceiling.get(p, ()) for p in
               purposes.declarable_under(purpose))


class _Usable:
    """Per purpose, the category nodes some grant could ever be used for."""

    __slots__ = ("_cache", "_categories", "_purposes")

    def __init__(self, categories: Tree, purposes: Purposes) -> None:
        self._categories = categories
        self._purposes = purposes
        self._cache: dict[str, frozenset[str]] = {}

    def nodes(self, purpose: str) -> frozenset[str]:
        """Nodes with a descendant (or themselves) in a non-consent-only ceiling under it."""
        found = self._cache.get(purpose)
        if found is None:
            usable: set[str] = set()
            for declared in self._purposes.declarable_under(purpose):
                if self._purposes.consent_only(declared):
                    continue
                for node in self._purposes.ceiling.get(declared, ()):
                    usable.update(self._categories.ancestors(node))
            found = self._cache[purpose] = frozenset(usable)
        return found


def _check_grant(
    lint: Linter, row: Row, categories: Tree, purposes: Purposes, parties: Parties
) -> bool:
    """Errors of one grant; True when it has none."""
    caller, purpose, category, action = row.values
    ok = True
    if action not in ACTIONS:
        lint.error("unknown-action", row, 3, f"unknown action {action!r}",
                   "read or write (read does not imply write)")
        ok = False
    if caller not in parties.party_type:
        lint.error("grant-without-party", row, 0, f"{caller!r} has no party line (g4)",
                   f"declare it: g4, {caller}, <party type> and g5, {caller}, <country>")
        ok = False
    if purpose == PURPOSE_ROOT:
        lint.error("grant-on-root", row, 1, "a grant cannot name the root 'purpose'",
                   "name the purposes or grouping nodes the caller needs")
        return False
    if purpose not in purposes.tree:
        lint.error("unknown-key", row, 1, f"purpose {purpose!r} is not in the purpose tree",
                   "check the spelling against the g2 lines")
        ok = False
    if category == CATEGORY_ROOT:
        lint.error("grant-on-root", row, 2, "a grant cannot name the root 'category'",
                   "name the categories the caller needs")
        return False
    if category not in categories:
        lint.error("unknown-key", row, 2, f"category {category!r} is not in the category "
                   "tree", "check the spelling against the g lines")
        return False
    if SPECIAL in categories.ancestors(category):
        lint.error("grant-on-special", row, 2, f"{category!r} is a special category, which "
                   "is never collected: no rule may grant it", "remove this line")
        return False
    if category == AGGREGATED:
        lint.error("grant-on-aggregated", row, 2, "'aggregated' needs no grant: any known "
                   "caller may read it under any purpose granted to it", "remove this line")
        return False
    if not ok:
        return False
    if not _in_scope(category, purpose, categories, purposes):
        scope = (f"the ceiling of {purpose!r}" if purposes.declarable(purpose)
                 else f"the ceilings of the purposes under {purpose!r}")
        lint.error("grant-outside-ceiling", row, 2, f"{category!r} is outside {scope}",
                   "grant a narrower category, or widen the ceiling if the privacy notice "
                   "allows it")
        ok = False
    kind = parties.party_type[caller]
    allowed = PARTY_PURPOSES.get(kind)
    if allowed is not None and allowed not in purposes.tree.ancestors(purpose):
        lint.error("party-purpose", row, 1, f"{caller} ({kind}) may act under "
                   f"{allowed} only, not {purpose!r}", f"grant {allowed} (POLICY-SPEC §1)")
        ok = False
    if kind == "processor" and not purposes.declarable(purpose):
        lint.error("processor-grant-on-grouping", row, 1, f"{caller} is a processor and "
                   f"{purpose!r} is not a declarable purpose",
                   "a processor acts only under the purposes named in its grant: name them "
                   "(e.g. " + ", ".join(purposes.declarable_under(purpose)[:2] or ("...",))
                   + ")")
        ok = False
    return ok


def lint_grants(
    lint: Linter, rows: list[Row], categories: Tree, purposes: Purposes, parties: Parties
) -> None:
    """Errors of every grant, then the warnings about the grants as a whole."""
    good: list[Row] = []
    for row in rows:
        if _check_grant(lint, row, categories, purposes, parties):
            good.append(row)

    index: dict[tuple[str, str], dict[tuple[str, str], Row]] = {}
    for row in good:
        caller, purpose, category, action = row.values
        index.setdefault((caller, action), {}).setdefault((purpose, category), row)
    usable = _Usable(categories, purposes)
    broader: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    granted: set[str] = set()
    for row in good:
        caller, purpose, category, action = row.values
        granted.add(purpose)
        held = index[(caller, action)]
        pair = (purpose, category)
        wider = broader.get(pair)
        if wider is None:
            wider = broader[pair] = tuple(
                (p, c) for p in purposes.tree.ancestors(purpose)
                for c in categories.ancestors(category) if (p, c) != pair)
        cover = next((held[w] for w in wider if w in held), None)
        if cover is not None:
            lint.warning("redundant-grant", row, 2, f"already granted by line {cover.line} "
                         f"({cover.values[1]} -> {cover.values[2]}, {action})",
                         "remove this line, or narrow the broader grant")
            continue
        if parties.safe(caller) and category not in usable.nodes(purpose):
            lint.warning("unusable-grant", row, 1, f"no request can use this grant: every "
                         f"purpose it covers under {purpose!r} needs consent",
                         "consent-only purposes are refused until a consent store exists; "
                         "remove the grant or add another lawful basis")
    for purpose, row in purposes.basis_row.items():
        if not any(a in granted for a in purposes.tree.ancestors(purpose)):
            lint.warning("ungranted-purpose", row, 0, f"no caller is granted {purpose!r}",
                         "grant it to the services that process data for it, or remove it")
