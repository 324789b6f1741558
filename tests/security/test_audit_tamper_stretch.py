"""Signed checkpoints come at a bounded interval: a longer unsigned stretch fails verify.

Every chain's checkpoints carry its writer's signed terms (sign at least every N
events, and within T seconds of the first unsigned event). Deleting checkpoints
from the store leaves a stretch longer than those terms allow.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.security.audit_tamper_kit import (
    AuditKeys,
    check,
    cli_verify,
    event,
    make_keys,
    record,
    record_event,
    sql,
    stored_events,
    trail,
)


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def test_deleted_periodic_checkpoints_leave_a_stretch_over_the_event_bound(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    events = record(store_url, audit_keys, [f"s-{i}" for i in range(20)], checkpoint_every=5)
    assert check(store_url, audit_keys).ok
    sql(store_url, "DELETE FROM audit_checkpoint WHERE kind = 'periodic'")
    report = check(store_url, audit_keys)
    assert [(p.kind, p.seq, p.event_id) for p in report.problems] == [
        ("unsigned", 6, events[5].event_id)]
    done = cli_verify(store_url, audit_keys, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr


def test_a_deleted_timed_checkpoint_leaves_a_stretch_over_the_time_bound(
    store_url: str, audit_keys: AuditKeys
) -> None:
    t = trail(store_url, audit_keys, checkpoint_every=1000, checkpoint_seconds=1.0)
    old = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record_event(t, dataclasses.replace(event("early"), ts=old))  # made 30 s ago
    for i in range(4):
        record_event(t, event(f"now-{i}"))  # the first one finds the stretch due: signed before it
    t.close()
    events = stored_events(store_url)
    assert check(store_url, audit_keys).ok
    sql(store_url, "DELETE FROM audit_checkpoint WHERE kind = 'periodic' AND seq = 1")
    report = check(store_url, audit_keys)
    assert [(p.kind, p.seq, p.event_id) for p in report.problems] == [
        ("unsigned", 2, events[1].event_id)]


def test_a_running_writers_unsigned_tail_within_the_bound_is_a_note(
    store_url: str, audit_keys: AuditKeys
) -> None:
    t = trail(store_url, audit_keys, checkpoint_every=1000, checkpoint_seconds=3600.0)
    for i in range(3):
        record_event(t, event(f"s-{i}"))
    t.flush()  # indexed
    report = check(store_url, audit_keys)
    t.close()
    assert report.ok, report.problems
    assert len(report.notes) == 1
    assert "3 event(s) after its last signed checkpoint" in report.notes[0]
