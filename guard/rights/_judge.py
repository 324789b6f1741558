"""Checks 9-13 of POLICY-SPEC §3 against a subject's entries in force."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from guard._types import Reason
from guard.policy._compiled import Purpose
from guard.policy._survival import Survival, survival_of
from guard.rights._entries import EntryKind, Record, State


@dataclass(frozen=True, slots=True)
class Verdict:
    """One register check: which, whether it passed, the entry behind it, in words."""

    reason: Reason
    passed: bool
    record: Record | None
    detail: str


def consent_in_force(state: State, purpose: Purpose) -> Record | None:
    """The latest consent entry for the purpose or an ancestor, if any."""
    ancestors = purpose.ancestors
    for record in reversed(state):
        if record.kind in (EntryKind.CONSENT_GRANTED, EntryKind.CONSENT_WITHDRAWN) and \
                record.purpose in ancestors:
            return record
    return None


def register_checks(
    state: State,
    purpose: Purpose,
    *,
    personal: bool,
    today: date,
    survival: Mapping[str, Survival],
) -> list[Verdict]:
    """Run checks 9-13 in order for a request naming a subject; stop at the first failure.

    Args:
        state: The subject's entries in force (empty for a subject with none).
        purpose: The declared purpose.
        personal: Whether a category of the request is personal data (not only
            ``aggregated``); checks 10-13 apply only then.
        today: The day the decision is made (UTC).
        survival: The policy's survival rows.
    """
    verdicts: list[Verdict] = []

    # 9. consent_required
    if purpose.consent_only:
        consent = consent_in_force(state, purpose)
        ok = consent is not None and consent.kind is EntryKind.CONSENT_GRANTED
        why = ("consent granted" if ok else "consent withdrawn" if consent is not None
               else "no consent recorded")
        verdicts.append(Verdict(Reason.CONSENT_REQUIRED, ok, consent, why))
        if not ok:
            return verdicts
    else:
        verdicts.append(Verdict(Reason.CONSENT_REQUIRED, True, None,
                                "not a consent-only purpose"))
    if not personal:
        verdicts.extend(Verdict(reason, True, None, "not personal data: does not apply")
                        for reason in (Reason.RETENTION_EXPIRED, Reason.ERASURE_REQUESTED,
                                       Reason.PROCESSING_RESTRICTED,
                                       Reason.OBJECTION_RECORDED))
        return verdicts

    end = erasure = restriction = objection = None
    for record in state:
        kind = record.kind
        if kind is EntryKind.END_OF_RELATIONSHIP:
            end = record
        elif kind is EntryKind.ERASURE_REQUESTED:
            erasure = record
        elif kind is EntryKind.RESTRICTION:
            restriction = record
        elif kind is EntryKind.OBJECTION and record.purpose in purpose.ancestors:
            objection = record

    # 10. retention_expired
    if end is not None and end.day <= today:
        kept = survival_of(survival, purpose.ancestors)
        until = kept.until(end.day) if kept is not None else end.day
        if kept is None or (until is not None and today >= until):
            why = (f"relationship ended {end.day}; {purpose.key} does not survive the end"
                   if kept is None else
                   f"relationship ended {end.day}; {purpose.key} survived until {until}")
            verdicts.append(Verdict(Reason.RETENTION_EXPIRED, False, end, why))
            return verdicts
        verdicts.append(Verdict(Reason.RETENTION_EXPIRED, True, end,
                                f"relationship ended {end.day}; survives "
                                + ("without limit" if until is None else f"until {until}")))
    else:
        verdicts.append(Verdict(Reason.RETENTION_EXPIRED, True, end,
                                "relationship in force" if end is None
                                else f"relationship ends {end.day}"))

    # 11. erasure_requested, 12. processing_restricted
    for reason, found, what in ((Reason.ERASURE_REQUESTED, erasure, "erasure requested"),
                                (Reason.PROCESSING_RESTRICTED, restriction,
                                 "processing restricted")):
        if found is not None and not purpose.exempt:
            verdicts.append(Verdict(reason, False, found, f"{what} on {found.day}"))
            return verdicts
        verdicts.append(Verdict(reason, True, found,
                                f"{what}, but {purpose.key} is exempt" if found is not None
                                else f"no {what.split()[0]} in force"))

    # 13. objection_recorded
    if objection is not None and purpose.objectable:
        verdicts.append(Verdict(Reason.OBJECTION_RECORDED, False, objection,
                                f"objection to {objection.purpose} since {objection.day}"))
        return verdicts
    verdicts.append(Verdict(Reason.OBJECTION_RECORDED, True, objection,
                            "no objection in force" if purpose.objectable or objection is None
                            else f"{purpose.key} is not objectable"))
    return verdicts
