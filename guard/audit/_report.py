"""The right-of-access report (privacy notice §9): who received a person's data, and why."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from guard.audit._event import utc_now
from guard.audit._query import AuditQueryError, EventFilter, QueryRow, query_events
from guard.audit._store import Store


@dataclass(frozen=True, slots=True)
class Access:
    """One allowed access to the subject's data."""

    when: str
    recipient: str
    party_type: str | None
    country: str | None
    purpose: str
    categories: tuple[str, ...]
    action: str
    lawful_basis: tuple[str, ...]
    outcome_status: int | None
    event_id: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """Everything one recipient received, summarised."""

    recipient: str
    party_type: str | None
    country: str | None
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    lawful_basis: tuple[str, ...]
    accesses: int
    first: str
    last: str


@dataclass(frozen=True, slots=True)
class RightsEntry:
    """One entry of the subject register (consent, objection, restriction, erasure, end)."""

    seq: int
    kind: str
    purpose: str
    effective: str
    recorded_at: str
    recorded_by: str
    ref: str
    event_id: str


@dataclass(frozen=True, slots=True)
class SubjectReport:
    """A data subject's report; names the person only by pseudonym."""

    subject: str
    generated_at: str
    recipients: tuple[Recipient, ...]
    accesses: tuple[Access, ...]
    denied_attempts: int
    register: tuple[RightsEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subject_report(store: Store, pseudonym: str) -> SubjectReport:
    rows = query_events(store, EventFilter(subject=pseudonym, allowed=True), limit=None,
                        oldest_first=True)
    condition, params = EventFilter(subject=pseudonym, allowed=False).where(store)
    denied = store.rows(f"SELECT count(*) FROM audit_event e WHERE {condition}", params)[0][0]  # noqa: S608 - constant SQL
    return report_of(pseudonym, rows, int(denied), register_of(store, pseudonym))


def report_of(pseudonym: str, rows: Iterable[QueryRow], denied: int,
              register: tuple[RightsEntry, ...]) -> SubjectReport:
    """The report from decisions already read (for a reader that reads them once): ``rows``
    are the subject's allowed decisions, oldest first, ``denied`` counts the refused."""
    accesses = tuple(
        Access(r.event.ts, r.event.caller, r.event.party_type, r.event.country, r.event.purpose,
               r.event.categories, r.event.action, r.event.lawful_basis, r.outcome_status,
               r.event.event_id) for r in rows)
    grouped: dict[str, list[Access]] = {}
    for access in accesses:
        grouped.setdefault(access.recipient, []).append(access)
    recipients = tuple(
        Recipient(
            recipient=name,
            party_type=items[-1].party_type,
            country=items[-1].country,
            purposes=tuple(sorted({a.purpose for a in items})),
            categories=tuple(sorted({c for a in items for c in a.categories})),
            lawful_basis=tuple(sorted({b for a in items for b in a.lawful_basis})),
            accesses=len(items),
            first=items[0].when,
            last=items[-1].when,
        )
        for name, items in sorted(grouped.items())
    )
    return SubjectReport(pseudonym, utc_now(), recipients, accesses, denied, register)


def register_of(store: Store, pseudonym: str) -> tuple[RightsEntry, ...]:
    rows = store.rows(
        "SELECT seq, kind, purpose, effective, recorded_at, recorded_by, ref, event_id "
        "FROM subject_register WHERE subject = ? ORDER BY seq", (pseudonym,))
    for r in rows:
        if type(r[0]) is not int:  # a writer to the store's row: named, not a traceback
            raise AuditQueryError(f"a subject register entry of {pseudonym[:12]}... has a "
                                  f"place (seq) that is no number ({r[0]!r}): it was written "
                                  "around the guard; run guard audit verify")
    return tuple(RightsEntry(r[0], *(str(v) for v in r[1:])) for r in rows)


def render_json(report: SubjectReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


_MARKUP = str.maketrans({ch: "\\" + ch for ch in "\\`[]<>&|"})
"""Markdown's escapes for what would make a cell markup: raw HTML, an entity, a link, code,
a table's column (a reference is text a rights-request system passed on, often the
subject's own words)."""


def _cell(values: tuple[str, ...] | str | int | None) -> str:
    if values is None:
        return "-"
    text = ", ".join(values) if isinstance(values, tuple) else str(values)
    return text.translate(_MARKUP) or "-"


def render_markdown(report: SubjectReport) -> str:
    """The report as Markdown: a summary per recipient, then every access."""
    out = [
        "# Right-of-access report",
        "",
        f"- Data subject (pseudonym): `{report.subject}`",
        f"- Generated: {report.generated_at}",
        f"- Accesses: {len(report.accesses)} by {len(report.recipients)} recipient(s); "
        f"{report.denied_attempts} refused request(s)",
        "",
        "## Recipients",
        "",
    ]
    if not report.recipients:
        out.append("No recipient has accessed this person's data.")
    else:
        out += ["| recipient | party | country | purposes | categories | lawful basis | "
                "accesses | first | last |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {_cell(r.recipient)} | {_cell(r.party_type)} | {_cell(r.country)} | "
                f"{_cell(r.purposes)} | {_cell(r.categories)} | {_cell(r.lawful_basis)} | "
                f"{r.accesses} | {r.first} | {r.last} |" for r in report.recipients]
        out += ["", "## Every access", "",
                "| when | recipient | purpose | categories | action | lawful basis | status |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {a.when} | {_cell(a.recipient)} | {_cell(a.purpose)} | "
                f"{_cell(a.categories)} | {_cell(a.action)} | {_cell(a.lawful_basis)} | "
                f"{_cell(a.outcome_status)} |" for a in report.accesses]
    out += ["", "## Rights requests (subject register)", ""]
    if not report.register:
        out.append("No rights request is recorded for this person.")
    else:
        out += ["| # | effective | entry | purpose | recorded | by | reference |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {e.seq} | {_cell(e.effective)} | {_cell(e.kind)} | {_cell(e.purpose)} | "
                f"{_cell(e.recorded_at)} | {_cell(e.recorded_by)} | {_cell(e.ref)} |"
                for e in report.register]
    return "\n".join(out) + "\n"
