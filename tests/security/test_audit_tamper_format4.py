"""Chain format 4 (one HMAC per event): its bytes, its tampering, journals that mix formats.

The attacker can run any SQL on the store and rewrite journal frames with correct
checksums, and knows the format, but holds neither the signing key nor the chain key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit import EventKind, open_store
from guard.audit._checkpoint import Terms
from guard.audit._fields import ChainKey, Linker, Pseudonyms, content
from guard.audit._jtrail import JournalTrail
from guard.audit._verify import stored_checkpoints
from tests.guard.audit.test_audit_encoding import FIELDS, journal_keeps, ref_json
from tests.security.audit_tamper_kit import (
    CHAIN_KEY,
    HMAC_KEY,
    AuditKeys,
    check,
    cli_verify,
    make_keys,
    rechain,
    record,
    sql,
)
from tests.security.audit_tamper_kit import trail as kit_trail
from tests.security.test_audit_tamper_journal import FIELDS as JOURNAL_FIELDS
from tests.security.test_audit_tamper_journal import check as check_journal
from tests.security.test_audit_tamper_journal import rewrite_frame

SUBJECTS = [f"subject-{i}" for i in range(12)]


def reference4(head: tuple[Any, ...], writer_id: str, seq: int, prev: str, key: bytes
               ) -> tuple[str, bytes]:
    """Format 4 by the standard library: HMAC-SHA256 under the chain key of ``v4`` and the
    record's bytes before its hash field; the record is the row's compact ASCII JSON."""
    before = ref_json([*head, writer_id, seq, prev])[:-1]
    hash_ = hmac.new(key, b"v4" + before, hashlib.sha256).hexdigest()
    return hash_, ref_json([*head, writer_id, seq, prev, hash_])


@settings(max_examples=150, deadline=None)
@given(fields=FIELDS, kind=st.sampled_from(list(EventKind)), writer=st.text(max_size=12),
       seq=st.integers(1, 2**63 - 1), prev=st.sampled_from(["0" * 64, "a" * 64]))
def test_a_format_4_link_is_the_standard_librarys_hmac_of_the_record(
    fields: dict[str, Any], kind: EventKind, writer: str, seq: int, prev: str
) -> None:
    head = content(kind, fields, Pseudonyms(HMAC_KEY), "2026-11-30T02:00:00.000000Z",
                   "0190e1b2-0000-7000-8000-000000000000")
    if not journal_keeps(list(head)):
        return  # refused alone (test_audit_encoding)
    got = Linker(writer, ChainKey(CHAIN_KEY), 4).link(head, seq, prev)
    assert got == reference4(head, writer, seq, prev, CHAIN_KEY)
    assert got[0] != Linker(writer, ChainKey(CHAIN_KEY), 3).link(head, seq, prev)[0]


def test_the_writer_links_format_4_and_signs_it_into_its_terms(
    store_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS[:3], checkpoint_every=2)
    store = open_store(store_url, create=False)
    try:
        formats = {Terms.from_json(cp.terms).chain for cp in stored_checkpoints(store)
                   if cp.terms is not None}
    finally:
        store.close()
    assert formats == {4}
    prev = "0" * 64
    for ev in events:
        head = open_row(store_url, ev.event_id)[:-4]
        assert (ev.prev_hash, ev.hash) == (prev, reference4(head, ev.writer_id, ev.seq, prev,
                                                            CHAIN_KEY)[0])
        prev = ev.hash
    assert check(store_url, keys).ok


def test_an_edited_format_4_event_is_caught_at_the_event(store_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS, checkpoint_every=50)
    sql(store_url, "UPDATE audit_event SET purpose = 'marketing' WHERE event_id = ?",
        (events[4].event_id,))
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", events[4].event_id)]


def test_a_deleted_format_4_event_is_caught(store_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS, checkpoint_every=50)
    sql(store_url, "DELETE FROM audit_event WHERE event_id = ?", (events[5].event_id,))
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("deleted", events[6].event_id)]


def test_reordered_format_4_events_are_caught(store_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS, checkpoint_every=50)
    a, b = events[3], events[4]  # swap their places (seq is unique: through -1)
    sql(store_url, "UPDATE audit_event SET seq = -1 WHERE event_id = ?", (a.event_id,))
    sql(store_url, "UPDATE audit_event SET seq = ? WHERE event_id = ?", (a.seq, b.event_id))
    sql(store_url, "UPDATE audit_event SET seq = ? WHERE event_id = ?", (b.seq, a.event_id))
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("reordered", b.event_id)]


def test_format_4_events_rehashed_without_the_key_are_caught_in_any_format(
    store_url: str, tmp_path: Path
) -> None:
    """Edit one event, then re-link it and every later one: with a guessed key in format 4
    or 3, or unkeyed in format 2 (a downgrade); each time the edited event is named."""
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS, checkpoint_every=50)
    edited = events[6]
    sql(store_url, "UPDATE audit_event SET caller = 'svc:evil' WHERE event_id = ?",
        (edited.event_id,))
    changed = [dataclasses.replace(ev, caller="svc:evil") if ev is edited else ev
               for ev in events]
    for fmt in ("v4", "v3", "v2"):
        rechain(store_url, changed[6:], fmt, start=7, prev=events[5].hash)
        report = check(store_url, keys)
        assert [(p.kind, p.event_id) for p in report.problems] == [
            ("altered", edited.event_id)], fmt
    done = cli_verify(store_url, keys, tmp_path)
    assert done.returncode == 1
    assert "TAMPERED" in done.stdout


def test_a_format_4_chain_relinked_in_format_3_under_the_key_is_refused(
    store_url: str, tmp_path: Path
) -> None:
    """A chain's format is the one its signed terms name, even for rows made with the key."""
    keys = make_keys(tmp_path)
    events = record(store_url, keys, SUBJECTS[:4], checkpoint_every=50)
    prev = "0" * 64
    for ev in events:  # the whole chain, re-linked by a key holder in the other format
        head = open_row(store_url, ev.event_id)[:-4]
        hash_, _ = Linker(ev.writer_id, ChainKey(CHAIN_KEY), 3).link(head, ev.seq, prev)
        sql(store_url, "UPDATE audit_event SET prev_hash = ?, hash = ? WHERE event_id = ?",
            (prev, hash_, ev.event_id))
        prev = hash_
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", events[0].event_id)]


def open_row(url: str, event_id: str) -> tuple[Any, ...]:
    """One stored row, as verify reads it."""
    from guard.audit._schema import EVENT_COLUMNS

    store = open_store(url, create=False)
    try:
        [row] = store.rows(f"SELECT {EVENT_COLUMNS} FROM audit_event WHERE event_id = ?",
                           (event_id,))
    finally:
        store.close()
    return tuple(row)


def journal_trail(url: str, folder: Path, keys: AuditKeys, chain: int) -> JournalTrail:
    """A trail on ``folder``; ``chain`` 3 writes as writers before format 4 did."""
    trail = kit_trail(url, keys, journal=folder, checkpoint_every=4)
    if chain == 3:  # before its first event: the opening checkpoint names the format
        writer = trail.writer
        writer._linker = Linker(writer.writer_id, ChainKey(CHAIN_KEY), 3)
        writer._terms = Terms(3, writer._terms.every, writer._terms.seconds)
    return trail


def mixed(tmp_path: Path) -> tuple[str, Path, AuditKeys, list[str], list[str]]:
    """One journal lane holding a format-3 chain, then a format-4 chain (after an upgrade)."""
    keys = make_keys(tmp_path)
    url, folder = f"sqlite:///{tmp_path / 'audit.db'}", tmp_path / "journal"
    ids = []
    for chain in (3, 4):
        trail = journal_trail(url, folder, keys, chain)
        ids.append([trail.record_fields(EventKind.DECISION, JOURNAL_FIELDS) for _ in range(6)])
        trail.close()
    return url, folder, keys, ids[0], ids[1]


def test_a_journal_mixing_formats_3_and_4_verifies(tmp_path: Path) -> None:
    url, folder, keys, _old, _new = mixed(tmp_path)
    report = check_journal(url, folder, keys)
    assert report.ok, (report.journal.problems, report.index, report.damage)
    assert (report.journal.events, report.journal.writers, report.lanes) == (12, 2, 1)
    store = open_store(url, create=False)
    try:
        formats = {Terms.from_json(cp.terms).chain for cp in stored_checkpoints(store)
                   if cp.terms is not None}
    finally:
        store.close()
    assert formats == {3, 4}
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_forged_frame_in_either_chain_of_a_mixed_journal_is_blamed_on_the_journal(
    tmp_path: Path,
) -> None:
    url, folder, keys, old, new = mixed(tmp_path)
    for forged in (old[2], new[3]):
        rewrite_frame(folder, forged, b'"read",1,"allowed"', b'"read",0,"allowed"')
    report = check_journal(url, folder, keys)
    assert not report.damage
    assert sorted((p.kind, p.event_id) for p in report.journal.problems) == sorted(
        [("altered", old[2]), ("altered", new[3])])
    assert sorted(p.event_id for p in report.index) == sorted([old[2], new[3]])
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert f"journal: altered: event {new[3]}" in done.stdout


def test_an_edited_index_row_of_a_format_4_chain_is_blamed_on_the_index(tmp_path: Path) -> None:
    url, folder, keys, _old, new = mixed(tmp_path)
    sql(url, "UPDATE audit_event SET reason = 'forged' WHERE event_id = ?", (new[1],))
    report = check_journal(url, folder, keys)
    assert report.journal.ok
    assert [(p.kind, p.event_id) for p in report.index] == [("altered", new[1])]
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert f"index disagrees with the journal: altered: event {new[1]}" in done.stdout
