"""A flood of refused requests naming a subject never fills the console opening its report.

A refused request is recorded under the subject its path names, whoever sends it (a
``401`` without any token counts in the subject's report). The console read every
decision about the subject into memory to build the report page and its exports: about
1.9 KB and 80 us a decision, so a client with no credentials that sent a million
requests naming ``c-0001`` made that person's right-of-access report take gigabytes and
minutes to open, and took down the console (or the sidecar that mounts it). Every
allowed decision is still read; of the refused ones, the oldest ``REFUSED_LISTED``, the
rest counted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.audit import AuditEvent, EventKind, Store, open_store, subject_report
from middleware.console._data import REFUSED_LISTED
from middleware.console._export import to_csv, to_json, to_pdf
from middleware.console._subject import subject_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))
from subjectkit import subject_decisions, write_decisions

PSEUDONYM = "7" * 64
FLOOD = REFUSED_LISTED + 2_500


def _refused(n: int) -> list[AuditEvent]:
    """``n`` refused requests naming the subject with no credentials (401 each)."""
    return [AuditEvent(
        event_id=f"{i:08x}-0000-7000-8000-ffffffffffff", kind=EventKind.DECISION,
        ts=f"2026-11-30T12:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i:06d}Z", caller="",
        purpose="relationship.management", categories=("identity", "contact"), action="read",
        allowed=False, reason="unauthenticated", rule=("check:unauthenticated",),
        lawful_basis=(), policy_version="sha256:test", subject=PSEUDONYM, http_method="GET",
        http_route="/customers/{customer_id}", http_status=401, latency_us=20,
        writer_id="flood", seq=i + 1) for i in range(n)]


@pytest.fixture
def flooded(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    write_decisions(store, [*subject_decisions(PSEUDONYM, 70), *_refused(FLOOD)])
    try:
        yield store
    finally:
        store.close()


def test_a_flood_of_refused_requests_is_counted_not_read_whole(flooded: Store) -> None:
    view = subject_view(flooded, PSEUDONYM, None)
    allowed = [r for r in view.decisions if r.event.allowed]
    assert len(allowed) == 60  # every access is in the report
    assert len(view.decisions) == 60 + REFUSED_LISTED  # what is read is bounded
    assert view.refused == FLOOD + 10  # what is refused is counted
    assert view.refused_unlisted == FLOOD + 10 - REFUSED_LISTED
    assert view.total == 70 + FLOOD
    expected = subject_report(flooded, PSEUDONYM)
    assert (view.report.accesses, view.report.recipients, view.report.denied_attempts) == (
        expected.accesses, expected.recipients, expected.denied_attempts)
    assert [r.event.ts for r in view.decisions] == sorted(r.event.ts for r in view.decisions)
    assert to_csv(view).count("\n") == 1 + 60 + REFUSED_LISTED
    assert f'"refused_unlisted": {view.refused_unlisted}' in to_json(view)
    assert to_pdf(view)[:4] == b"%PDF"


def test_a_report_under_the_bound_lists_every_decision(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        write_decisions(store, [*subject_decisions(PSEUDONYM, 70), *_refused(5)])
        view = subject_view(store, PSEUDONYM, None)
        assert len(view.decisions) == 75
        assert (view.refused, view.refused_unlisted, view.total) == (15, 0, 75)
    finally:
        store.close()
