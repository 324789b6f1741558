"""Refusals: a register change that would be meaningless or unlawful changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from guard._subject_rule import subject_id_ok, subject_rule_error
from guard.policy._compiled import DIRECT_MARKETING, CompiledPolicy
from guard.rights._entries import EntryKind, RegisterRefusedError, State


@dataclass(frozen=True, slots=True)
class Change:
    """A register change asked for, before it is checked and recorded.

    Args:
        subject: The raw data-subject id (pseudonymised before it is stored).
        kind: What to record.
        purpose: The purpose or grouping node (consents and objections), else ``""``.
        effective: The end date (end of relationship); other entries take effect now.
        ref: A ticket or the legal reason (required to override an objection or
            refuse an erasure).
        who: Who records it (``cli:USER`` or the API caller).
    """

    subject: str
    kind: EntryKind
    purpose: str = ""
    effective: date | None = None
    ref: str = ""
    who: str = ""


NARROWING = frozenset({
    EntryKind.CONSENT_WITHDRAWN, EntryKind.OBJECTION, EntryKind.RESTRICTION,
    EntryKind.ERASURE_REQUESTED, EntryKind.END_OF_RELATIONSHIP,
})
"""The kinds that only ever narrow what may be done with a subject's data."""


def objectable_under(policy: CompiledPolicy, node: str) -> list[str]:
    """The declarable purposes at or under ``node`` that an objection stops."""
    return sorted(key for key, p in policy.purposes.items()
                  if node in p.ancestors and p.objectable)


def validate(policy: CompiledPolicy, state: State, change: Change, *, known: bool = False) -> None:
    """Raise :class:`RegisterRefusedError` (one line, with the reason) for a change to refuse.

    A subject id must follow the subject rule (``guard._subject_rule``). A subject
    the register already has entries for under an id outside the rule (recorded
    before the rule) may still be given an entry that only narrows (a withdrawal,
    objection, restriction, erasure request or end of relationship).

    Args:
        policy: The policy in force.
        state: The subject's entries in force.
        change: The change asked for.
        known: The register has entries for this subject.
    """
    if not change.subject.strip():
        raise RegisterRefusedError("the subject id is empty")
    if not change.ref.isprintable():  # a store may refuse it after the event is durable
        raise RegisterRefusedError("the reference must be one line of printable text (no "
                                   "control, format or unpaired surrogate character)")
    if not subject_id_ok(change.subject) and not (known and change.kind in NARROWING):
        raise RegisterRefusedError(subject_rule_error(change.subject))
    kind, purpose = change.kind, change.purpose
    if kind.names_purpose:
        node = policy.purposes.get(purpose)
        if node is None:
            raise RegisterRefusedError(f"unknown purpose {purpose!r}: not in the purpose tree")
    elif purpose:
        raise RegisterRefusedError(f"a {kind.value} entry names no purpose")
    if kind is EntryKind.END_OF_RELATIONSHIP and change.effective is None:
        raise RegisterRefusedError("an end of relationship needs its date (--on YYYY-MM-DD)")
    if kind is not EntryKind.END_OF_RELATIONSHIP and change.effective is not None:
        # enforced from the moment it is recorded: a date would say otherwise
        raise RegisterRefusedError(f"a {kind.value} entry takes effect when it is recorded: "
                                   "only an end of relationship takes a date")
    if kind is EntryKind.OBJECTION and not objectable_under(policy, purpose):
        raise RegisterRefusedError(
            f"an objection to {purpose!r} covers no objectable purpose: outside "
            f"{DIRECT_MARKETING}, only purposes whose lawful bases are legitimate_interest "
            "and/or public_task alone are objectable")
    if kind is EntryKind.OBJECTION_OVERRIDDEN:
        if purpose == DIRECT_MARKETING or purpose.startswith(DIRECT_MARKETING + "."):
            raise RegisterRefusedError(
                f"an objection to {purpose!r} is an objection to direct marketing: it is "
                "absolute and cannot be overridden")
        if not change.ref.strip():
            raise RegisterRefusedError("an override needs --ref: the compelling legitimate grounds")
        if not any(r.kind is EntryKind.OBJECTION and r.purpose == purpose for r in state):
            raise RegisterRefusedError(f"no objection to {purpose!r} is in force for this subject")
    if kind is EntryKind.ERASURE_REFUSED and not change.ref.strip():
        raise RegisterRefusedError("refusing an erasure needs --ref: the legal reason")
