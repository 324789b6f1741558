"""Shared pieces of the lint: the finding collector, key syntax and a tree of keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from guard.policy._findings import Finding, Severity
from guard.policy._source import Row

KEY_RE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
SEGMENT_RE = re.compile(r"^[a-z0-9_]+$")
COUNTRY_SHAPE_RE = re.compile(r"^[A-Z]{2}$")
CALLER_RE = re.compile(r"^[^\s\"',]+$")
ACTIONS = frozenset({"read", "write"})
# casbin's role manager follows at most 9 links (max_hierarchy_level=10 counts the
# start). A category needs one more link than its depth to reach its purpose
# ceiling, so categories may be 9 levels deep and purposes 10.
MAX_CATEGORY_LEVELS = 9
MAX_PURPOSE_LEVELS = 10
# A party type restricted to some purposes (POLICY-SPEC §1 Parties).
PARTY_PURPOSES: dict[str, str] = {
    "group": "business.administration",
    "adviser": "legal.compliance",
    "authority": "legal.compliance",
}


class Linter:
    """Collects findings for one file."""

    __slots__ = ("findings", "origin")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.findings: list[Finding] = []

    def _add(  # noqa: PLR0917 - mirrors Finding's fields
        self, severity: Severity, code: str, row: Row | None, index: int | None,
        message: str, hint: str,
    ) -> None:
        column = None
        if row is not None and index is not None:
            column = row.columns[0] if index < 0 else row.column_of(index)
        self.findings.append(Finding(
            severity, code, message, self.origin,
            row.line if row is not None else None, column, hint,
        ))

    def error(
        self, code: str, row: Row | None, index: int | None, message: str, hint: str
    ) -> None:
        """An error: the policy will not load. ``index`` is the value's position (-1: type)."""
        self._add(Severity.ERROR, code, row, index, message, hint)

    def warning(
        self, code: str, row: Row | None, index: int | None, message: str, hint: str
    ) -> None:
        """A warning: the policy loads, but something is probably not what was meant."""
        self._add(Severity.WARNING, code, row, index, message, hint)


@dataclass(slots=True)
class Tree:
    """A tree of dotted keys as written in rules.csv (first parent wins, as in compile)."""

    root: str
    parent: dict[str, str] = field(default_factory=dict)
    row: dict[str, Row] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    _ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _subtree: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, child: str, parent: str, row: Row) -> None:
        """Record ``child`` under ``parent``."""
        self.parent[child] = parent
        self.row[child] = row
        self.children.setdefault(parent, []).append(child)

    def __contains__(self, key: object) -> bool:
        return key in self.parent

    def ancestors(self, key: str) -> tuple[str, ...]:
        """``key`` first, then its parents up to (not including) the root; safe on cycles."""
        found = self._ancestors.get(key)
        if found is None:
            chain = [key]
            seen = {key}
            node = key
            while (up := self.parent.get(node)) is not None and up != self.root:
                if up in seen:
                    break
                chain.append(up)
                seen.add(up)
                node = up
            found = self._ancestors[key] = tuple(chain)
        return found

    def subtree(self, key: str) -> tuple[str, ...]:
        """``key`` and every node below it; safe on cycles."""
        found = self._subtree.get(key)
        if found is None:
            out: list[str] = []
            seen: set[str] = set()
            stack = [key]
            while stack:
                node = stack.pop()
                if node in seen:
                    continue
                seen.add(node)
                out.append(node)
                stack.extend(self.children.get(node, ()))
            found = self._subtree[key] = tuple(out)
        return found

    def top_level(self, key: str) -> bool:
        """Whether ``key`` hangs directly under the root."""
        return self.parent.get(key) == self.root
