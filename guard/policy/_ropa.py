"""The record of processing activities (GDPR Art. 30), generated from the policy.

One activity per declarable purpose: its description (the ``# purpose: text``
comment of rules.csv), the categories of personal data (its ceiling), its
lawful bases, the recipients by party type with what each may receive, and
the transfers outside GB with their safeguard.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from guard.policy._compiled import (
    ADEQUATE,
    HOME_COUNTRY,
    PARTY_TYPES,
    CompiledPolicy,
    Party,
    Purpose,
)
from guard.policy._survival import UNLIMITED, survival_of

_DESCRIPTION = re.compile(r"^#\s*([a-z0-9_]+(?:\.[a-z0-9_]+)+)\s*:\s*(.+?)\s*$")
_PARTY_ORDER = ("internal", "group", "processor", "adviser", "authority")


@dataclass(frozen=True, slots=True)
class Recipient:
    """A caller that may receive data for a purpose, and on what terms."""

    caller: str
    party_type: str
    country: str
    categories: tuple[str, ...]
    actions: tuple[str, ...]
    safeguard: str  # "GB", "adequacy", a mechanism, or "none"

    @property
    def transfer(self) -> bool:
        """Outside GB."""
        return self.country != HOME_COUNTRY

    @property
    def safeguarded(self) -> bool:
        """In GB, adequate, or under a mechanism."""
        return self.safeguard != "none"


@dataclass(frozen=True, slots=True)
class Activity:
    """One processing activity: a declarable purpose."""

    purpose: str
    description: str
    lawful_bases: tuple[str, ...]
    categories: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    retention: str = "ends with the customer relationship"
    """How long after the end of the relationship the purpose may still be used (§8)."""

    @property
    def consent_only(self) -> bool:
        """Consent is the only basis."""
        return set(self.lawful_bases) <= {"consent"}

    @property
    def transfers(self) -> tuple[Recipient, ...]:
        """Recipients outside GB."""
        return tuple(r for r in self.recipients if r.transfer)


def _descriptions(policy: CompiledPolicy) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in policy.source.rules_text.splitlines():
        match = _DESCRIPTION.match(line.strip())
        if match and match.group(1) in policy.purposes:
            found.setdefault(match.group(1), match.group(2))
    return found


def _adequate(policy: CompiledPolicy) -> set[str]:
    return {row.values[0] for row in policy.rows
            if row.ptype == "g5" and len(row.values) == 2 and row.values[1] == ADEQUATE}


def _safeguard(party: Party, adequate: set[str]) -> str:
    if party.country == HOME_COUNTRY:
        return HOME_COUNTRY
    if party.country in adequate:
        return "adequacy"
    if party.mechanisms:
        return ", ".join(party.mechanisms)
    return "adequacy" if party.transfer_safe else "none"


def _top(nodes: set[str], policy: CompiledPolicy) -> tuple[str, ...]:
    """Nodes without an ancestor in the set, sorted."""
    return tuple(sorted(n for n in nodes
                        if not any(a in nodes for a in policy.categories[n].ancestors[1:])))


def _received(policy: CompiledPolicy, purpose: Purpose, caller: str) -> tuple[set[str], set[str]]:
    nodes: set[str] = set()
    actions: set[str] = set()
    for category, action in policy.grants.get((caller, purpose.key), {}):
        inside = {n for n in purpose.ceiling
                  if category in policy.categories[n].ancestors}
        if inside:
            nodes |= inside
            actions.add(action)
    return nodes, actions


def build_ropa(policy: CompiledPolicy) -> list[Activity]:
    """Every declarable purpose of the policy as an activity, in key order."""
    descriptions = _descriptions(policy)
    adequate = _adequate(policy)
    activities: list[Activity] = []
    for key in sorted(k for k, p in policy.purposes.items() if p.declarable):
        purpose = policy.purposes[key]
        recipients: list[Recipient] = []
        for caller in sorted(policy.parties):
            nodes, actions = _received(policy, purpose, caller)
            if not nodes:
                continue
            party = policy.parties[caller]
            recipients.append(Recipient(
                caller, party.party_type or "unknown", party.country or "-",
                _top(nodes, policy), tuple(sorted(actions)), _safeguard(party, adequate)))
        recipients.sort(key=lambda r: (_PARTY_ORDER.index(r.party_type)
                                       if r.party_type in PARTY_TYPES else 99, r.caller))
        activities.append(Activity(key, descriptions.get(key, ""), purpose.bases,
                                   tuple(sorted(purpose.ceiling_roots)), tuple(recipients),
                                   retention_text(policy, key)))
    return activities


def retention_text(policy: CompiledPolicy, key: str) -> str:
    """The survival of a purpose after the end of the relationship, in words."""
    kept = survival_of(policy.survival, policy.purposes[key].ancestors)
    if kept is None:
        return "ends with the customer relationship"
    if kept.period == UNLIMITED:
        return f"survives the end of the relationship without limit ({kept.location})"
    return f"survives the end of the relationship by {kept.period} ({kept.location})"


def render_markdown(activities: list[Activity], version: str) -> str:
    """The record as Markdown, one section per activity."""
    lines = ["# Record of processing activities (GDPR Art. 30)", "",
             f"Generated from the policy `{version}` by `guard policy ropa`; "
             "it lists what the guard enforces.", ""]
    for act in activities:
        title = f"## `{act.purpose}`" + (f": {act.description}" if act.description else "")
        lines += [title, "",
                  f"- **Lawful basis:** {', '.join(act.lawful_bases)}"
                  + (" (requests need the data subject's recorded opt-in)"
                     if act.consent_only else ""),
                  f"- **Categories of personal data:** {', '.join(act.categories) or 'none'}",
                  f"- **Retention:** {act.retention}"]
        if not act.recipients:
            lines += ["- **Recipients:** none", ""]
            continue
        lines.append("- **Recipients:**")
        for kind in _PARTY_ORDER:
            members = [r for r in act.recipients if r.party_type == kind]
            if members:
                lines.append(f"  - {kind}: " + "; ".join(
                    f"`{r.caller}` ({', '.join(r.categories)}; {'/'.join(r.actions)})"
                    for r in members))
        if act.transfers:
            lines.append("- **Transfers outside GB:**")
            for r in act.transfers:
                how = (f"safeguard: {r.safeguard}" if r.safeguarded
                       else "**NOT SAFEGUARDED**: no adequacy, no mechanism; the guard "
                       "refuses its requests for personal data")
                lines.append(f"  - `{r.caller}` in {r.country}, {how}")
        else:
            lines.append("- **Transfers outside GB:** none")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_csv(activities: list[Activity]) -> str:
    """One row per activity and recipient (one row with no recipient if it has none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["purpose", "description", "lawful_bases", "categories", "recipient",
                     "party_type", "country", "recipient_categories", "actions",
                     "transfer", "safeguard", "retention"])
    for act in activities:
        head = [act.purpose, act.description, ";".join(act.lawful_bases),
                ";".join(act.categories)]
        if not act.recipients:
            writer.writerow([*head, "", "", "", "", "", "", "", act.retention])
        for r in act.recipients:
            writer.writerow([*head, r.caller, r.party_type, r.country, ";".join(r.categories),
                             ";".join(r.actions), "yes" if r.transfer else "no",
                             r.safeguard if r.safeguarded else "none (not safeguarded)",
                             act.retention])
    return out.getvalue()
