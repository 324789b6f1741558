"""Bulk work: which of many subjects may be used for one request, each allowed one audited."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING

from guard._subject_rule import subject_id_ok
from guard._types import Decision, HttpContext, Reason, Request, denial

if TYPE_CHECKING:
    from guard._guard import Guard

CHUNK = 1000


def filter_subjects(
    guard: Guard,
    template: Request,
    subjects: Iterable[str],
    *,
    batch_id: str,
    asker: str,
    http: HttpContext | None = None,
) -> Iterator[str]:
    """Yield, in input order, the subjects ``template`` may be used for.

    Each yielded subject's decision is durable in the audit trail (detail
    ``batch:ID asker:WHO``) before it is yielded; one that cannot be recorded is
    withheld, and so is an id outside the subject rule (``c-1`` with a space or a
    byte-order mark is no id the register knows, and would be used as ``c-1``).

    Args:
        guard: The guard (its policy and register decide, its trail records).
        template: The request, without subject.
        subjects: Raw subject ids.
        batch_id: Shared by every event of this run.
        asker: Who asked for the filtering (the CLI user, the API caller).
        http: The HTTP side, when the sidecar asked.
    """
    it = iter(subjects)
    while chunk := list(islice(it, CHUNK)):
        allowed: list[tuple[Request, Decision]] = []
        for subject in chunk:
            if not subject_id_ok(subject):  # " c-1", a BOM: another id than the one the
                continue  # register knows, which a reader stripping it would process
            request = replace(template, subject=subject)
            try:
                decision = guard.holder.decide(request, guard.register)
            except Exception:
                decision = denial(Reason.INTERNAL_ERROR, request)
            if decision.allowed:
                allowed.append((request, decision))
        durable = guard.record_decisions(allowed, detail=f"batch:{batch_id} asker:{asker}",
                                         http=http)
        for (request, _), ok in zip(allowed, durable, strict=True):
            if ok:
                assert request.subject is not None
                yield request.subject
