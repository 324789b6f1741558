"""Register entries: what a data subject asked for, and what the company decided."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from guard._errors import AuditUnavailableError, GuardError


class EntryKind(StrEnum):
    """The kinds of register entry (POLICY-SPEC §4)."""

    CONSENT_GRANTED = "consent_granted"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    OBJECTION = "objection"
    OBJECTION_OVERRIDDEN = "objection_overridden"
    RESTRICTION = "restriction"
    RESTRICTION_LIFTED = "restriction_lifted"
    ERASURE_REQUESTED = "erasure_requested"
    ERASURE_REFUSED = "erasure_refused"
    END_OF_RELATIONSHIP = "end_of_relationship"

    @property
    def names_purpose(self) -> bool:
        """Consents and objections name a purpose; the others concern every purpose."""
        return self in _PURPOSE_KINDS


_PURPOSE_KINDS = frozenset({
    EntryKind.CONSENT_GRANTED, EntryKind.CONSENT_WITHDRAWN, EntryKind.OBJECTION,
    EntryKind.OBJECTION_OVERRIDDEN,
})


class RegisterRefusedError(GuardError):
    """A register change refused before anything was recorded (the message says why)."""


class RegisterUnreadableError(AuditUnavailableError):
    """A register row that is no entry the guard wrote (an unknown kind, a place or a day
    that is no number or date): written around the guard; ``guard audit verify`` names it."""


@dataclass(frozen=True, slots=True)
class Record:
    """One entry as it bears on decisions: its kind, purpose (``""``: all) and date."""

    kind: EntryKind
    purpose: str
    day: date

    @property
    def rule(self) -> str:
        """The entry as a decision's rule: ``register:KIND:PURPOSE:DATE``."""
        return f"register:{self.kind.value}:{self.purpose or 'all'}:{self.day.isoformat()}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One register entry as stored: append-only, never edited.

    Args:
        subject: The subject's keyed pseudonym (the audit trail's HMAC), never the raw id.
        seq: Its place in the subject's history (1, 2, ...).
        entry_id: Unique id of the entry.
        kind: What was recorded.
        purpose: The purpose or grouping node it names (``""`` for subject-wide kinds).
        effective: The day it takes effect (the end date for an end of relationship).
        recorded_at: When it was recorded (UTC, ISO 8601).
        recorded_by: Who recorded it (``cli:USER`` or the API caller's id).
        ref: Free text: a ticket, the legal reason.
        event_id: The id of its audit event.
    """

    subject: str
    seq: int
    entry_id: str
    kind: EntryKind
    purpose: str
    effective: date
    recorded_at: str
    recorded_by: str
    ref: str
    event_id: str

    @property
    def record(self) -> Record:
        """What decisions need of this entry."""
        return Record(self.kind, self.purpose, self.effective)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "subject": self.subject, "seq": self.seq, "entry_id": self.entry_id,
            "kind": self.kind.value, "purpose": self.purpose or None,
            "effective": self.effective.isoformat(), "recorded_at": self.recorded_at,
            "recorded_by": self.recorded_by, "ref": self.ref or None,
            "event_id": self.event_id,
        }


State = tuple[Record, ...]
"""A subject's entries in force, oldest first (see :func:`fold`)."""


_SUPERSEDES: dict[EntryKind, tuple[EntryKind, ...]] = {
    EntryKind.CONSENT_GRANTED: (EntryKind.CONSENT_GRANTED, EntryKind.CONSENT_WITHDRAWN),
    EntryKind.CONSENT_WITHDRAWN: (EntryKind.CONSENT_GRANTED, EntryKind.CONSENT_WITHDRAWN),
    EntryKind.OBJECTION: (EntryKind.OBJECTION,),
    EntryKind.OBJECTION_OVERRIDDEN: (EntryKind.OBJECTION,),
    EntryKind.RESTRICTION: (EntryKind.RESTRICTION,),
    EntryKind.RESTRICTION_LIFTED: (EntryKind.RESTRICTION,),
    EntryKind.ERASURE_REQUESTED: (EntryKind.ERASURE_REQUESTED,),
    EntryKind.ERASURE_REFUSED: (EntryKind.ERASURE_REQUESTED,),
    EntryKind.END_OF_RELATIONSHIP: (EntryKind.END_OF_RELATIONSHIP,),
}
# Entries that only end an earlier one leave nothing in force, except a
# consent withdrawal: it must outrank an older grant on an ancestor.
_LEAVES_NOTHING = frozenset({
    EntryKind.OBJECTION_OVERRIDDEN, EntryKind.RESTRICTION_LIFTED, EntryKind.ERASURE_REFUSED,
})


def fold(state: State, record: Record) -> State:
    """The state after ``record``: a later entry supersedes an earlier one of its kind."""
    gone = _SUPERSEDES[record.kind]
    kept = tuple(r for r in state if not (r.kind in gone and r.purpose == record.purpose))
    if record.kind in _LEAVES_NOTHING:
        return kept
    return (*kept, record)
