"""An attacker who can write to the audit store rewrites history: verify catches it.

The attack of the hardening review: delete every checkpoint but the opening one,
delete one subject's events, renumber the chain and re-hash it. The chain is keyed
with a secret the store does not hold, so the re-hashed rows do not verify, and an
edit is reported at the edited event, not at the next checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from guard.audit import GENESIS_HASH
from tests.security.audit_tamper_kit import (
    AuditKeys,
    check,
    cli_verify,
    make_keys,
    pseudonym,
    rechain,
    record,
    sql,
)

SUBJECTS = [("alice" if i % 4 == 1 else f"subject-{i}") for i in range(24)]
FORMATS = ["v2", "v3"]


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_deleting_a_subject_and_rehashing_the_chain_is_caught(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path, fmt: str
) -> None:
    events = record(store_url, audit_keys, SUBJECTS, checkpoint_every=5)
    assert check(store_url, audit_keys).ok
    sql(store_url, "DELETE FROM audit_checkpoint WHERE kind <> 'open'")
    sql(store_url, "DELETE FROM audit_event WHERE subject = ?", (pseudonym("alice"),))
    kept = [ev for ev in events if ev.subject != pseudonym("alice")]
    # Renumber and re-hash from the first event whose place changed (seq 2 -> 1 etc.).
    moved = next(i for i, ev in enumerate(kept) if ev.seq != i + 1)
    rechain(store_url, kept[moved:], fmt, start=moved + 1,
            prev=kept[moved - 1].hash if moved else GENESIS_HASH)
    first_moved = kept[moved]

    report = check(store_url, audit_keys)
    assert not report.ok
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", first_moved.event_id)]
    done = cli_verify(store_url, audit_keys, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_rehashed_edit_is_reported_at_the_edited_event(
    store_url: str, audit_keys: AuditKeys, fmt: str
) -> None:
    events = record(store_url, audit_keys, SUBJECTS, checkpoint_every=10)
    edited = events[6]  # seq 7: three events before the checkpoint at seq 10
    sql(store_url, "UPDATE audit_event SET caller = 'svc:evil' WHERE event_id = ?",
        (edited.event_id,))
    changed = [dataclasses.replace(ev, caller="svc:evil") if ev.seq == 7 else ev
               for ev in events]
    # Re-hash the edited event and every later one, so the chain links again.
    rechain(store_url, changed[6:], fmt, start=7, prev=events[5].hash)

    report = check(store_url, audit_keys)
    assert [(p.kind, p.seq, p.event_id) for p in report.problems] == [
        ("altered", 7, edited.event_id)]
