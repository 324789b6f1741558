"""The compiled policy: immutable look-up tables built once per load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guard.policy._findings import Finding
from guard.policy._source import PolicySource, Row
from guard.policy._survival import Survival

CATEGORY_ROOT = "category"
PURPOSE_ROOT = "purpose"
CEILING_PREFIX = "ceiling:"
SPECIAL = "special"
AGGREGATED = "aggregated"
HOME_COUNTRY = "GB"
ADEQUATE = "adequate"
MECHANISMS = frozenset({"idta", "uk_addendum"})
LAWFUL_BASES = frozenset(
    {"consent", "contract", "legal_obligation", "legitimate_interest", "vital_interests",
     "public_task"}
)
PARTY_TYPES = frozenset({"internal", "group", "processor", "adviser", "authority"})
DIRECT_MARKETING = "marketing"
"""The grouping node under which an objection is absolute (POLICY-SPEC §4)."""
OBJECTABLE_BASES = frozenset({"legitimate_interest", "public_task"})
EXEMPT_PURPOSES = frozenset({"legal.compliance", "rights.request"})
"""Purposes a restriction or an erasure request does not stop (POLICY-SPEC §4)."""

GrantKey = tuple[str, str]  # (granted category node, action)


@dataclass(frozen=True, slots=True)
class Category:
    """A node of the category tree."""

    key: str
    ancestors: tuple[str, ...]  # itself first, up to its top-level category
    special: bool


@dataclass(frozen=True, slots=True)
class Purpose:
    """A node of the purpose tree."""

    key: str
    ancestors: tuple[str, ...]  # itself first, up to its grouping node
    bases: tuple[str, ...]
    ceiling: frozenset[str]  # every category node the purpose may use
    ceiling_roots: tuple[str, ...]  # the ceiling as written in rules.csv

    @property
    def declarable(self) -> bool:
        """Only purposes with a lawful basis may be declared by a request."""
        return bool(self.bases)

    @property
    def consent_only(self) -> bool:
        """No lawful basis but consent: needs a data subject's recorded opt-in."""
        return "consent" in self.bases and set(self.bases) <= {"consent"}

    @property
    def direct_marketing(self) -> bool:
        """Under the ``marketing`` grouping node: an objection to it is absolute."""
        return self.ancestors[-1] == DIRECT_MARKETING

    @property
    def objectable(self) -> bool:
        """A declarable purpose a data subject's objection stops (POLICY-SPEC §4)."""
        return self.declarable and (
            self.direct_marketing or set(self.bases) <= OBJECTABLE_BASES
        )

    @property
    def exempt(self) -> bool:
        """Not stopped by a restriction or an erasure request (POLICY-SPEC §4)."""
        return any(a in EXEMPT_PURPOSES for a in self.ancestors)


@dataclass(frozen=True, slots=True)
class Party:
    """A caller of the guard: who they are and where."""

    caller: str
    party_type: str | None
    country: str | None
    mechanisms: tuple[str, ...]
    transfer_safe: bool


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Everything a decision needs, in dictionaries; never mutated after load.

    ``grants[(caller, purpose)]`` holds, for every declarable purpose the caller may
    declare, the merged grants of that purpose and its ancestors:
    ``{(category node, action): (rule locations, ...)}``.
    """

    source: PolicySource
    version: str
    rows: tuple[Row, ...]
    categories: Mapping[str, Category]
    purposes: Mapping[str, Purpose]
    parties: Mapping[str, Party]
    grants: Mapping[tuple[str, str], Mapping[GrantKey, tuple[str, ...]]]
    findings: tuple[Finding, ...] = ()  # lint warnings (errors never load)
    joined: Mapping[tuple[str, str], tuple[Party, Mapping[GrantKey, tuple[str, ...]]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """``grants`` joined with ``parties``: ``(caller, purpose) -> (party, merged grants)``,
    so that a granted request costs one probe of one large table (the hot path)."""
    survival: Mapping[str, Survival] = field(default_factory=dict)
    """``survives:`` rows: purpose or grouping node -> how long it outlives the relationship."""
    enforcer: Any = field(default=None, compare=False)
    """casbin Enforcer for a model the compiler does not recognise (the slow path)."""

    @property
    def compiled(self) -> bool:
        """False when decisions go through casbin's Enforcer instead of the tables."""
        return self.enforcer is None
