"""The chain hash: producers digest the content, the committer links it; old chains verify."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit import (
    AuditEvent,
    load_signing_key,
    open_store,
)
from guard.audit._checkpoint import CheckpointKind, sign_checkpoint
from guard.audit._event import GENESIS_HASH
from guard.audit._fields import Linker, decode_many
from tests.guard.audit import conftest as kit
from tests.guard.audit.conftest import Keys, decision_event, linked, make_trail, record, sql
from tests.guard.audit.test_audit_encoding import reference
from tests.guard.audit.test_audit_tamper import check, insert_row

TEXT = st.text(max_size=12)


def legacy_hash(event: AuditEvent) -> str:
    """Format 1 (events written before format 2): SHA-256 (hex) of every field but ``hash``
    as canonical JSON (sorted keys, no spaces, ASCII)."""
    data = event.to_dict()
    del data["hash"]
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=True).encode()).hexdigest()


@settings(max_examples=40, deadline=None)
@given(caller=TEXT, categories=st.lists(TEXT, max_size=3), allowed=st.sampled_from([True, False]),
       writer=TEXT, seq=st.integers(1, 10**9))
def test_the_journal_writers_link_is_the_hash_of_the_linked_event(
    caller: str, categories: list[str], allowed: bool, writer: str, seq: int
) -> None:
    event = decision_event(caller=caller, categories=tuple(categories), allowed=allowed)
    placed = linked(event, writer, seq, "a" * 64)
    hash_, record = Linker(writer, None).link(kit.row_of(event)[:-4], seq, "a" * 64)
    assert (hash_, record) == reference(kit.row_of(event)[:-4], writer, seq, "a" * 64, None)
    assert hash_ == placed.hash
    assert decode_many([record]) == (list(kit.row_of(placed)), [])
    assert placed.hash != legacy_hash(placed)


def test_each_link_field_and_the_content_change_the_hash() -> None:
    head = kit.row_of(decision_event())[:-4]
    other_head = kit.row_of(decision_event(caller="svc:other"))[:-4]

    def hash_of(writer: str, seq: int, prev: str, content: tuple[object, ...]) -> str:
        return Linker(writer, None).link(content, seq, prev)[0]

    base = ("w/1", 7, "a" * 64, head)
    hashes = {hash_of(*base)}
    for i, other in enumerate(("w/2", 8, "c" * 64, other_head)):
        changed = list(base)
        changed[i] = other
        hashes.add(hash_of(*changed))  # type: ignore[arg-type]
    assert len(hashes) == 5
    # The writer id and the sequence number cannot trade characters.
    assert hash_of("w1", 23, "a" * 64, head) != hash_of("w12", 3, "a" * 64, head)


def _format_1_chain(url: str, keys: Keys, n: int) -> list[AuditEvent]:
    """Write ``n`` events hashed as before format 2, with signed open and close checkpoints."""
    key = load_signing_key(keys.signing)
    writer, prev, events = "old-host/1", GENESIS_HASH, []
    for seq in range(1, n + 1):
        event = dataclasses.replace(decision_event(subject_id=f"s{seq}"), writer_id=writer,
                                    seq=seq, prev_hash=prev)
        event = dataclasses.replace(event, hash=legacy_hash(event))
        prev = event.hash
        events.append(event)
    checkpoints = [
        sign_checkpoint(key, checkpoint_id=f"cp-{kind.value}", writer_id=writer, seq=seq,
                        hash_=hash_, ts="2026-01-01T00:00:00.000000Z", kind=kind)
        for kind, seq, hash_ in ((CheckpointKind.OPEN, 0, GENESIS_HASH),
                                 (CheckpointKind.CLOSE, n, prev))
    ]
    store = open_store(url)
    kit.seed(store, [kit.row_of(e) for e in events], checkpoints)
    store.close()
    return events


def test_a_chain_hashed_in_format_1_still_verifies_and_its_tampering_is_caught(
    store_url: str, keys: Keys
) -> None:
    events = _format_1_chain(store_url, keys, 6)
    assert check(store_url, keys).ok
    sql(store_url, "UPDATE audit_event SET caller = 'svc:evil' WHERE event_id = ?",
            (events[3].event_id,))
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", events[3].event_id)]


def test_a_row_rehashed_in_the_other_format_breaks_the_chain(store_url: str, keys: Keys) -> None:
    events = _format_1_chain(store_url, keys, 4)
    edited = dataclasses.replace(events[1], caller="svc:evil")
    sql(store_url, "UPDATE audit_event SET caller = ?, hash = ? WHERE event_id = ?",
            ("svc:evil", linked(edited, edited.writer_id, edited.seq, edited.prev_hash).hash,
             edited.event_id))
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", events[1].event_id)]


def test_a_store_of_schema_1_verifies_before_and_after_a_writer_migrates_it(
    store_url: str, keys: Keys
) -> None:
    from guard.audit._schema import MIGRATIONS

    for statement in (*MIGRATIONS[1], "CREATE TABLE schema_version "
                      "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
                      "INSERT INTO schema_version VALUES (1, '2026-01-01')"):
        sql(store_url, statement)
    events = _format_1_chain_rows(store_url, keys, 3)
    assert check(store_url, keys).ok  # its reader migrated it: checkpoints have terms now
    reader = open_store(store_url, create=False)
    try:
        assert reader.rows("SELECT count(*), count(terms) FROM audit_checkpoint") == [(2, 0)]
    finally:
        reader.close()
    trail = make_trail(store_url, keys, checkpoint_every=2)
    for i in range(3):
        record(trail, decision_event(subject_id=f"new-{i}"))
    trail.close()
    report = check(store_url, keys)
    assert report.ok, report.problems
    assert report.writers == 2
    sql(store_url, "UPDATE audit_event SET caller = 'svc:evil' WHERE event_id = ?",
            (events[0].event_id,))
    assert [p.event_id for p in check(store_url, keys).problems] == [events[0].event_id]


def _format_1_chain_rows(url: str, keys: Keys, n: int) -> list[AuditEvent]:
    """A format-1 chain written with schema-1 SQL (no ``terms`` column)."""
    key = load_signing_key(keys.signing)
    writer, prev, events = "old-host/2", GENESIS_HASH, []
    for seq in range(1, n + 1):
        event = dataclasses.replace(decision_event(subject_id=f"o{seq}"), writer_id=writer,
                                    seq=seq, prev_hash=prev)
        event = dataclasses.replace(event, hash=legacy_hash(event))
        prev = event.hash
        events.append(event)
        insert_row(url, event)
    for kind, seq, hash_ in ((CheckpointKind.OPEN, 0, GENESIS_HASH),
                             (CheckpointKind.CLOSE, n, prev)):
        cp = sign_checkpoint(key, checkpoint_id=f"old-{kind.value}", writer_id=writer, seq=seq,
                             hash_=hash_, ts="2026-01-01T00:00:00.000000Z", kind=kind)
        sql(url, "INSERT INTO audit_checkpoint (checkpoint_id, writer_id, seq, hash, ts, "
                     "kind, key_id, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cp.checkpoint_id, cp.writer_id, cp.seq, cp.hash, cp.ts, cp.kind.value,
                 cp.key_id, cp.signature))
    return events
