"""Subject access: look a person up by pseudonym, record the look-up, build the reply.

The raw subject id arrives in a POST body and goes no further than
:meth:`guard.Guard.acheck` (whose pipeline turns it into the keyed pseudonym);
it is never logged, stored or put in a URL. The look-up is a real decision by
the policy: the auditor asks for the configured purpose (``rights.request``)
about that subject, and the trail records who looked at whom. An allowed
look-up is a *grant*: its decision id, with the pseudonym, opens the report and
its exports for ``console.grant_minutes``; each view or export is recorded as
an ``outcome`` of that decision, naming the route.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from guard import Guard
from guard._errors import AuditUnavailableError
from guard._types import HttpContext, Request
from guard.audit import QueryRow, Store, SubjectReport, pseudonymise
from guard.audit._event import TS_FORMAT
from guard.audit._report import register_of, report_of
from guard.config import ConsoleSettings
from guard.policy._compiled import ADEQUATE, CompiledPolicy
from middleware.console._data import REFUSED_LISTED, Row, refused_count, subject_events

HOME_COUNTRY = "GB"
LOOKUP_METHOD, LOOKUP_ROUTE = "POST", "/subject"
"""How :func:`lookup` records a look-up: the only decisions that are grants."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """The decision on an auditor's subject look-up."""

    allowed: bool
    reason: str
    decision_id: str
    pseudonym: str


async def lookup(guard: Guard, hmac_key: bytes, conf: ConsoleSettings, auditor: str,
                 raw_subject: str) -> Lookup:
    """Ask the policy whether ``auditor`` may see this subject's accesses, and record it.

    Args:
        guard: Decides and records (fail closed: an unrecordable look-up is refused).
        hmac_key: The subject HMAC key of the trail.
        conf: The console settings (purpose and categories declared).
        auditor: The signed-in auditor's caller id.
        raw_subject: The subject id as typed; used only here.
    """
    request = Request(auditor, conf.purpose, tuple(conf.categories), subject=raw_subject)
    checked = await guard.acheck(request, HttpContext(method=LOOKUP_METHOD, route=LOOKUP_ROUTE))
    decision = checked.decision
    if decision.allowed and checked.decision_id:  # the grant is read back from the index
        with contextlib.suppress(AuditUnavailableError):
            await asyncio.to_thread(guard.trail.flush)
    return Lookup(decision.allowed and bool(checked.decision_id), decision.reason,
                  checked.decision_id, pseudonymise(hmac_key, raw_subject))


def grant_valid(store: Store, decision_id: str, auditor: str, pseudonym: str,
                minutes: int, *, purpose: str = "rights.request",
                now: datetime | None = None) -> bool:
    """True if ``decision_id`` is a recent allowed look-up of ``pseudonym`` by ``auditor``.

    Only the console's own look-up is a grant (its purpose, method and route): any other
    allowed decision by the auditor's caller id about the subject (a service it also
    calls) never opens the report, which the policy may refuse it.

    Args:
        store: The audit store.
        decision_id: The grant, from the report's URL.
        auditor: The signed-in auditor.
        pseudonym: The subject's pseudonym, from the report's URL.
        minutes: How long a grant lasts (``console.grant_minutes``).
        purpose: The purpose a look-up declares (``console.purpose``).
        now: The time to judge by (tests).
    """
    rows = store.rows(
        "SELECT caller, subject, allowed, ts, purpose, http_method, http_route "
        "FROM audit_event WHERE event_id = ? AND kind = 'decision'", [decision_id])
    if not rows:
        return False
    caller, subject, allowed, ts, declared, method, route = rows[0]
    oldest = ((now or datetime.now(UTC)) - timedelta(minutes=minutes)).strftime(TS_FORMAT)
    return (caller == auditor and subject == pseudonym and allowed == 1 and str(ts) >= oldest
            and (declared, method, route) == (purpose, LOOKUP_METHOD, LOOKUP_ROUTE))


@dataclass(frozen=True, slots=True)
class Transfer:
    """A recipient outside the home country and what makes the transfer lawful."""

    recipient: str
    country: str
    safeguard: str
    accesses: int


@dataclass(frozen=True, slots=True)
class SubjectView:
    """Everything the console shows and exports about one data subject."""

    report: SubjectReport
    decisions: tuple[Row, ...]
    transfers: tuple[Transfer, ...]
    refused_unlisted: int = 0
    """Refused decisions counted in the report but not among ``decisions``."""

    @property
    def total(self) -> int:
        """Every decision about the subject, listed or not."""
        return len(self.decisions) + self.refused_unlisted

    @property
    def refused(self) -> int:
        """Every refused decision about the subject, listed or not."""
        return self.report.denied_attempts

    @property
    def register(self) -> tuple[Any, ...]:
        """The subject register's history (consents, objections...), if the store has one."""
        return tuple(getattr(self.report, "register", ()) or ())

    def to_dict(self) -> dict[str, Any]:
        """The reply as a JSON-ready mapping (notice §9)."""
        data = self.report.to_dict()
        data["transfers_abroad"] = [
            {"recipient": t.recipient, "country": t.country, "safeguard": t.safeguard,
             "accesses": t.accesses} for t in self.transfers]
        data["decisions"] = [
            {"when": r.event.ts, "caller": r.event.caller, "party_type": r.event.party_type,
             "country": r.event.country, "purpose": r.event.purpose,
             "lawful_basis": list(r.event.lawful_basis),
             "categories": list(r.event.categories), "action": r.event.action,
             "allowed": r.event.allowed, "reason": r.event.reason,
             "status": r.status, "event_id": r.event.event_id}
            for r in self.decisions]
        data["refused_unlisted"] = self.refused_unlisted
        return data


GROUPED_BY = ("recipient, country, purpose, action, categories, lawful basis, outcome "
              "(with its reason) and final HTTP status")
"""The columns whose values are the same in every decision of a group."""


@dataclass(frozen=True, slots=True)
class DecisionGroup:
    """Decisions about the subject that agree in every column the reply shows.

    ``count`` decisions, the oldest at ``first`` and the newest at ``last``.
    """

    recipient: str
    country: str | None
    purpose: str
    action: str
    categories: tuple[str, ...]
    lawful_basis: tuple[str, ...]
    allowed: bool
    reason: str
    status: int | None
    count: int
    first: str
    last: str

    @property
    def outcome(self) -> str:
        """``allowed``, or ``allowed``/``refused`` and the reason when it says more."""
        word = "allowed" if self.allowed else "refused"
        return word if self.reason == word else f"{word}: {self.reason}"


_Key = tuple[str, str | None, str, str, tuple[str, ...], tuple[str, ...], bool, str, int | None]


def group_decisions(rows: tuple[Row, ...] | list[Row]) -> list[DecisionGroup]:
    """Group ``rows`` by every column the reply shows, ordered by each group's first decision.

    Args:
        rows: The subject's decisions (any order).
    """
    groups: dict[_Key, tuple[int, str, str]] = {}
    for row in rows:
        e = row.event
        key: _Key = (e.caller, e.country, e.purpose, e.action, e.categories, e.lawful_basis,
               bool(e.allowed), e.reason, row.status)
        seen = groups.get(key)
        groups[key] = (1, e.ts, e.ts) if seen is None else (
            seen[0] + 1, min(seen[1], e.ts), max(seen[2], e.ts))
    out = [DecisionGroup(*key, count, first, last)
           for key, (count, first, last) in groups.items()]
    out.sort(key=lambda g: (g.first, g.last, g.recipient, g.purpose, not g.allowed, g.reason))
    return out


def safeguard(policy: CompiledPolicy | None, caller: str) -> str:
    """What the policy says makes transfers to ``caller`` lawful (``adequate``, ``idta``...)."""
    party = policy.parties.get(caller) if policy is not None else None
    if party is None:
        return "unknown"
    if party.mechanisms:
        return ", ".join(sorted(party.mechanisms))
    return ADEQUATE if party.transfer_safe else "none"


def subject_view(store: Store, pseudonym: str, policy: CompiledPolicy | None) -> SubjectView:
    """Build the subject's reply from the store (``policy`` names transfer safeguards).

    The subject's decisions are read once, with their final status; the §9 summary
    is built from the allowed ones.
    """
    decisions = tuple(subject_events(store, pseudonym))
    refused = sum(1 for r in decisions if r.event.allowed is False)
    unlisted = refused_count(store, pseudonym) - refused if refused >= REFUSED_LISTED else 0
    report = report_of(
        pseudonym, [QueryRow(r.event, r.status) for r in decisions if r.event.allowed is True],
        refused + unlisted, register_of(store, pseudonym))
    counts: dict[tuple[str, str], int] = {}
    for access in report.accesses:
        if access.country and access.country != HOME_COUNTRY:
            key = (access.recipient, access.country)
            counts[key] = counts.get(key, 0) + 1
    transfers = tuple(Transfer(name, country, safeguard(policy, name), n)
                      for (name, country), n in sorted(counts.items()))
    return SubjectView(report, decisions, transfers, unlisted)
