"""The audit journal: frames, torn tails, rotation, the journal trail and its index."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError, ConfigError
from guard.audit import EventKind, load_public_key, open_store, verify
from guard.audit._fields import compact
from guard.audit._journal import Journal, JournalReader, read_journal, segments
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    IndexedTrail,
    Keys,
    decision_event,
    journal_with_a_bad_second_record,
    make_trail,
    record,
    row_of,
)

FIELDS: dict[str, Any] = {
    "caller": "svc:crm", "purpose": "relationship.management",
    "categories": ("contact.email",), "action": "read", "allowed": True,
    "reason": "allowed", "rule": ("rules.csv:1",), "lawful_basis": ("contract",),
    "policy_version": "sha256:test", "subject_id": "cust-1",
}


def make(url: str, keys: Keys, folder: Path, **fields: Any) -> IndexedTrail:
    return make_trail(url, keys, journal=folder, **fields)


def count(url: str, sql: str = "SELECT count(*) FROM audit_event") -> int:
    store = open_store(url, create=False)
    try:
        return int(store.rows(sql)[0][0])
    finally:
        store.close()


# -- the journal itself ------------------------------------------------------------------------


def test_a_torn_tail_is_cut_off_and_the_journal_goes_on(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    assert journal.append([b"one", b"two"]) == 0
    assert journal.append([b"three"]) == 2
    journal.close()
    [(_, path)] = segments(tmp_path / "j")
    size = path.stat().st_size
    with path.open("ab") as handle:  # a crash in the middle of the next frame
        handle.write(b"\x40\x00\x00\x00\x01\x02")
    journal = Journal(tmp_path / "j")
    assert journal.next_offset == 3
    assert path.stat().st_size == size
    assert journal.append([b"four"]) == 3
    journal.close()
    assert [p for _, p in read_journal(tmp_path / "j")] == [b"one", b"two", b"three", b"four"]


def test_a_bad_checksum_ends_the_scan_and_is_reported(tmp_path: Path) -> None:
    journal_with_a_bad_second_record(tmp_path / "j")
    records = list(read_journal(tmp_path / "j"))
    assert records[0] == (0, b"alpha")
    damage = records[1]
    assert not isinstance(damage, tuple)
    assert (damage.offset, damage.why) == (1, "checksum mismatch")


def test_segments_rotate_at_the_bound_and_are_named_by_first_offset(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=90)
    for n in range(10):
        journal.append([b"x" * 40, b"y" * 40])
        assert journal.next_offset == 2 * (n + 1)
    journal.close()
    firsts = [first for first, _ in segments(tmp_path / "j")]
    assert firsts == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    reader = JournalReader(tmp_path / "j", 5)
    assert reader.read(20, 100) == [b"x" * 40 if n % 2 == 0 else b"y" * 40
                                    for n in range(5, 20)]
    reader.close()
    reopened = Journal(tmp_path / "j", segment_bytes=90)
    assert reopened.next_offset == 20
    reopened.close()


def test_one_process_holds_a_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    with pytest.raises(ConfigError, match="in use"):
        Journal(tmp_path / "j")
    journal.close()


def test_a_disk_that_refuses_fails_the_batch_and_keeps_the_chain(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append([b"kept"])
    good = os.dup(journal._fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, journal._fd)  # the kernel answers ENOSPC from here on
    with pytest.raises(AuditUnavailableError, match="refused"):
        journal.append([b"lost"])
    assert journal.next_offset == 1
    os.dup2(good, journal._fd)
    os.close(full)
    os.close(good)
    assert journal.append([b"next"]) == 1
    journal.close()
    assert [p for _, p in read_journal(tmp_path / "j")] == [b"kept", b"next"]


# -- the fast serialiser gives the bytes the chain is defined on ---------------------------------

VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(),
                  st.lists(st.text(), max_size=3))


@given(st.lists(VALUE, max_size=30))
def test_compact_is_the_canonical_encoding(values: list[Any]) -> None:
    expected = json.dumps(values, separators=(",", ":"), ensure_ascii=True).encode()
    assert compact(values) == expected


@given(caller=st.text(), detail=st.one_of(st.none(), st.text()),
       categories=st.lists(st.text(), max_size=3))
def test_the_writer_builds_the_row_a_built_event_has(
    caller: str, detail: str | None, categories: list[str]
) -> None:
    from guard.audit._fields import content

    event = decision_event(caller=caller, detail=detail, categories=tuple(categories))
    listed = [json.dumps(list(getattr(event, name)), separators=(",", ":"))
              for name in ("categories", "rule", "lawful_basis")]
    expected = (event.event_id, "decision", event.ts, caller, "internal", "GB",
                "relationship.management", listed[0], "read", 1, "allowed", listed[1], listed[2],
                "sha256:test", event.subject, None, None, None, None, None, None, None, detail)
    assert content(event.kind, event.to_dict(), HMAC_KEY, "unused", "unused") == expected
    assert row_of(event)[:-4] == expected


# -- the journal trail ----------------------------------------------------------------------------


def test_events_are_durable_in_the_journal_and_indexed_behind_it(
    store_url: str, keys: Keys, tmp_path: Path
) -> None:
    trail = make(store_url, keys, tmp_path / "j", checkpoint_every=25)
    first = trail.record_fields(EventKind.DECISION, FIELDS)

    async def many() -> list[str]:
        return await asyncio.gather(*[trail.start_fields(EventKind.DECISION, FIELDS)
                                      for _ in range(200)])

    ids = asyncio.run(many())
    trail.post_fields(EventKind.OUTCOME, {"decision_ref": first, "http_status": 200})
    record(trail, decision_event(caller="svc:built"))
    assert trail.record_many_fields(EventKind.DECISION, [FIELDS] * 30) != [None] * 30
    trail.flush()
    journal_events = sum(1 for record in read_journal(trail.journal.folder)
                         if isinstance(record, tuple) and record[1].startswith(b"["))
    trail.close()
    assert len(set(ids)) == 200
    assert journal_events == count(store_url) == 1 + 200 + 1 + 1 + 30
    store = open_store(store_url, create=False)
    report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    subject = store.rows("SELECT subject FROM audit_event WHERE event_id = ?", (first,))
    store.close()
    assert report.ok, report.problems
    assert subject[0][0] != "cust-1"  # the pseudonym, never the raw id


def test_an_index_that_lost_its_last_transactions_replays_without_duplicates(
    store_url: str, keys: Keys, tmp_path: Path
) -> None:
    trail = make(store_url, keys, tmp_path / "j")
    for _ in range(50):
        trail.record_fields(EventKind.DECISION, FIELDS)
    journal_id = trail.journal.journal_id
    trail.close()
    events = count(store_url)
    store = open_store(store_url)
    store.index_records([], journal_id, 10)  # as if everything after offset 10 was never indexed
    store.close()
    trail = make(store_url, keys, tmp_path / "j")
    trail.flush()
    trail.close()
    assert count(store_url) == events
    assert count(store_url, "SELECT count(*) FROM (SELECT event_id FROM audit_event "
                            "GROUP BY event_id HAVING count(*) > 1) d") == 0


def test_a_store_that_refuses_leaves_the_journal_durable_and_catches_up(
    keys: Keys, tmp_path: Path
) -> None:
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    trail = make(url, keys, tmp_path / "j")
    import sqlite3

    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the store takes no writes
    trail.store._timeout = 0.05  # type: ignore[attr-defined]
    trail.store._conn.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]
    ids = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(5)]
    assert len(ids) == 5  # durable in the journal, though the store refuses
    assert trail.indexer.wait(trail.journal.next_offset, timeout=0.3) is False
    blocker.execute("ROLLBACK")
    blocker.close()
    trail.flush()
    trail.close()
    assert count(url) == 5


def test_the_guard_records_through_the_journal(keys: Keys, tmp_path: Path) -> None:
    from guard import HttpContext, Request
    from guard._guard import Guard
    from guard.config import AuditSettings, Settings

    settings = Settings(audit=AuditSettings(
        store=f"sqlite:///{tmp_path / 'audit.db'}",
        hmac_key=tmp_path / "hmac.key", signing_key=keys.signing))
    guard = Guard.from_settings(settings)
    request = Request("svc:crm", "relationship.management", ("contact",), subject="cust-7")
    checked = guard.check(request, HttpContext("GET", "/customers/{id}"))
    assert checked.decision.allowed
    assert checked.decision_id

    async def both() -> str:
        done = await guard.acheck(request)
        assert guard.enqueue_outcome(done.decision_id, 200)
        return done.decision_id

    second = asyncio.run(both())
    assert guard.record_decisions([(request, checked.decision)]) == [True]
    guard.close()
    assert (tmp_path / "audit.db.journal" / "lane-0").is_dir()
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert count(url, "SELECT count(*) FROM audit_event WHERE kind = 'decision'") == 3
    assert count(url, "SELECT count(*) FROM audit_event WHERE kind = 'outcome' AND "
                      f"decision_ref = '{second}'") == 1


def test_a_journal_that_cannot_be_written_denies(keys: Keys, tmp_path: Path) -> None:
    from guard import Reason, Request
    from guard._guard import Guard
    from guard.policy import load_policy
    from guard.policy._holder import PolicyHolder

    trail = make(f"sqlite:///{tmp_path / 'audit.db'}", keys, tmp_path / "j")
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=HMAC_KEY)
    full = os.open("/dev/full", os.O_WRONLY)
    good = os.dup(trail.journal._fd)
    os.dup2(full, trail.journal._fd)
    request = Request("svc:crm", "relationship.management", ("contact",), subject="cust-7")
    checked = guard.check(request)
    assert checked.decision.reason is Reason.AUDIT_UNAVAILABLE
    assert asyncio.run(guard.acheck(request)).decision.reason is Reason.AUDIT_UNAVAILABLE
    assert trail.ready()[0] is False
    os.dup2(good, trail.journal._fd)
    os.close(full)
    os.close(good)
    assert guard.check(request).decision.allowed
    guard.close()


def test_batch_ids_are_uuid7_in_order_and_unique() -> None:
    import uuid

    from guard.audit import new_event_id
    from guard.audit._ids import new_event_ids

    ids = [new_event_id(), *new_event_ids(5000), new_event_id()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_an_idle_journal_proves_readiness_with_one_heartbeat(keys: Keys, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = make(url, keys, tmp_path / "j", readiness_probe_seconds=3600)
    for _ in range(100):
        assert trail.ready() == (True, "audit journal writable")
    trail.close()
    assert count(url, "SELECT count(*) FROM audit_event WHERE kind = 'heartbeat'") == 1


def test_a_journal_below_its_reserve_refuses_events_and_is_not_ready(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.ERROR, logger="guard.audit")
    trail = make(f"sqlite:///{tmp_path / 'audit.db'}", keys, tmp_path / "j",
                 reserve_mb=10**12)  # more than any disk has free
    for _ in range(5):
        with pytest.raises(AuditUnavailableError, match="below the reserve"):
            trail.record_fields(EventKind.DECISION, FIELDS)
    ok, why = trail.ready()
    assert not ok
    assert "below the reserve" in why
    trail.close()
    failed = [r for r in caplog.records if "failed: " in r.getMessage()]
    assert len(failed) == 1  # the cause once, not once per event


def test_a_journal_disk_that_refuses_is_not_ready_until_it_takes_writes_again(
    keys: Keys, tmp_path: Path
) -> None:
    trail = make(f"sqlite:///{tmp_path / 'audit.db'}", keys, tmp_path / "j",
                 readiness_probe_seconds=0.01)
    assert trail.ready()[0]
    full = os.open("/dev/full", os.O_WRONLY)
    good = os.dup(trail.journal._fd)
    os.dup2(full, trail.journal._fd)
    import time

    time.sleep(1.1)  # past the probe interval and the re-probe pause
    ok, why = trail.ready()
    assert not ok
    assert "No space left" in why
    os.dup2(good, trail.journal._fd)
    os.close(full)
    os.close(good)
    time.sleep(1.1)
    assert trail.ready() == (True, "audit journal writable")
    trail.close()
