"""A writer killed mid-chain: the next writer countersigns its verified unsigned tail.

A killed writer leaves the events after its last checkpoint unsigned. The next
trail on the same journal indexes that tail, checks it with the chain key once
it is older than the chain's signed bound, and signs its head; a tail that was
tampered with is not countersigned.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import (
    EventKind,
    load_public_key,
    load_signing_key,
    new_event_id,
    open_store,
    read_witness,
)
from guard.audit._checkpoint import Checkpoint, CheckpointKind, Terms
from guard.audit._countersign import MARGIN, countersign_stale
from guard.audit._event import GENESIS_HASH
from guard.audit._fields import ChainKey, Linker, content
from guard.audit._jverify import verify_journal
from tests.guard.audit.conftest import acknowledged_until_killed, seed
from tests.security.audit_tamper_kit import CHAIN_KEY, AuditKeys, check, make_keys, sql, trail

INTERVAL = 0.3
CHILD = r"""
import sys
from pathlib import Path
from guard.audit import EventKind, JournalTrail
from guard.audit._indexer import Indexer
from guard.config import AuditSettings

url, key, journal = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[4])
trail = JournalTrail(AuditSettings(store=url, signing_key=key, hmac_key=Path(sys.argv[5]),
                                   journal=journal, checkpoint_every=1000,
                                   checkpoint_seconds=float(sys.argv[3]), index="external"))
indexer = Indexer(trail.journal.folder, trail.store)  # behind the journal, in this process
i = 0
while True:
    event_id = trail.record_fields(EventKind.DECISION, {
        "caller": "svc:a", "purpose": "p", "categories": ("c",), "allowed": True,
        "reason": "allowed", "subject_id": f"s-{i}"})
    sys.stdout.write(event_id + "\n")
    sys.stdout.flush()
    i += 1
"""


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def _killed_writer(url: str, keys: AuditKeys, tmp_path: Path) -> str:
    """Run a keyed writer in a child, SIGKILL it mid-stream; its chain id, once indexed."""
    journal = keys.signing.parent / "journal"
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(keys.signing), str(INTERVAL),
                              str(journal), str(keys.hmac)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    acknowledged_until_killed(child, 40)
    catch_up = trail(url, keys, checkpoint_seconds=3600.0)  # indexes the lane's tail
    catch_up.flush()
    catch_up.close()
    store = open_store(url, create=False)
    try:
        return str(store.rows("SELECT writer_id FROM audit_event LIMIT 1")[0][0])
    finally:
        store.close()


def _tail(url: str, writer: str) -> list[int]:
    store = open_store(url, create=False)
    try:
        signed = store.rows("SELECT max(seq) FROM audit_checkpoint WHERE writer_id = ?",
                            (writer,))[0][0]
        return [int(r[0]) for r in store.rows(
            "SELECT seq FROM audit_event WHERE writer_id = ? AND seq > ? ORDER BY seq",
            (writer, signed))]
    finally:
        store.close()


def test_the_next_writer_countersigns_a_killed_writers_tail(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    dead = _killed_writer(store_url, audit_keys, tmp_path)
    if not _tail(store_url, dead):  # killed right after a checkpoint: add an unsigned tail
        pytest.skip("the child was killed right after a checkpoint")
    assert any(dead in note for note in check(store_url, audit_keys).notes)
    witness = tmp_path / "witness.jsonl"
    nxt = trail(store_url, audit_keys, checkpoint_seconds=INTERVAL, witness=witness)
    deadline = time.monotonic() + 60
    while _tail(store_url, dead) and time.monotonic() < deadline:
        time.sleep(0.2)  # it countersigns once the tail is older than the chain's bound
    nxt.close()
    report = check(store_url, audit_keys, witness)
    assert report.ok, report.problems
    assert report.notes == ()
    assert any(cp.kind is CheckpointKind.COUNTERSIGN and cp.writer_id == dead
               for cp in read_witness(witness).checkpoints)  # the witness has it too
    store = open_store(store_url, create=False)
    try:  # the countersign in the next trail's journal covers the dead chain's copy there
        journal = verify_journal(store, audit_keys.signing.parent / "journal",
                                 load_public_key(audit_keys.public), chain_key=CHAIN_KEY)
    finally:
        store.close()
    assert journal.ok, (journal.journal.problems, journal.index, journal.damage)
    assert not any(dead in note for note in journal.journal.notes), journal.journal.notes


def test_a_tampered_tail_is_not_countersigned(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    dead = _killed_writer(store_url, audit_keys, tmp_path)
    tail = _tail(store_url, dead)
    if not tail:
        pytest.skip("the child was killed right after a checkpoint")
    sql(store_url, "UPDATE audit_event SET caller = 'svc:evil' WHERE writer_id = ? AND seq = ?",
        (dead, tail[-1]))
    time.sleep(INTERVAL + MARGIN + 0.2)  # the tail is now older than the chain's bound
    key = load_signing_key(audit_keys.signing)
    store = open_store(store_url)
    try:
        written = countersign_stale(store, key, ChainKey(CHAIN_KEY), "next")
    finally:
        store.close()
    assert written == []
    report = check(store_url, audit_keys)
    assert [(p.kind, p.seq) for p in report.problems] == [("altered", tail[-1])]


def _stale_chain(store: Any, key: Ed25519PrivateKey, writer: str, terms: str) -> None:
    """Three keyed events of ``writer`` from long ago after an open checkpoint with ``terms``."""
    ts, prev, rows = "2026-01-01T00:00:00.000000Z", GENESIS_HASH, []
    linker = Linker(writer, ChainKey(CHAIN_KEY))
    for seq in (1, 2, 3):
        head = content(EventKind.DECISION, {"caller": "svc:a", "allowed": True}, b"", ts,
                       new_event_id())
        hash_, _record = linker.link(head, seq, prev)
        rows.append((*head, writer, seq, prev, hash_))
        prev = hash_
    unsigned = Checkpoint(new_event_id(), writer, 0, GENESIS_HASH, ts, CheckpointKind.OPEN,
                          "test", "", terms)
    seed(store, rows, [replace(unsigned, signature=key.sign(unsigned.payload()).hex())])


def test_a_chain_whose_signed_terms_cannot_be_read_does_not_stop_the_others(
    store_url: str, audit_keys: AuditKeys
) -> None:
    key = load_signing_key(audit_keys.signing)
    store = open_store(store_url)
    try:
        _stale_chain(store, key, "odd/1", "{not terms")
        _stale_chain(store, key, "good/1", Terms(3, 1000, 0.3).to_json())
        written = countersign_stale(store, key, ChainKey(CHAIN_KEY), "next")
    finally:
        store.close()
    assert [(cp.writer_id, cp.seq) for cp in written] == [("good/1", 3)]
