"""Audit fixtures: keys and trails (the store URLs come from the shared ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sqlite3
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from crc32c import crc32c

from guard.audit import (
    AuditEvent,
    EventKind,
    JournalTrail,
    Store,
    derive_chain_key,
    load_public_key,
    load_signing_key,
    new_event_id,
    open_store,
    pseudonymise,
    verify,
)
from guard.audit._checkpoint import Checkpoint
from guard.audit._event import FIELD_NAMES, utc_now
from guard.audit._fields import ChainKey, Linker, checkpoint_record, compact, content
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal, read_journal, segments
from guard.audit._schema import Row
from guard.config import AuditSettings

HMAC_KEY = b"k" * 32
CHAIN_KEY = derive_chain_key(HMAC_KEY)


def sql(url: str | Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Run one statement straight on an audit store (an SQLite or PostgreSQL URL, or an
    SQLite file's path), past the guard, as a writer to the store may."""
    if isinstance(url, Path) or url.startswith("sqlite:///"):
        conn = sqlite3.connect(url if isinstance(url, Path) else url.removeprefix("sqlite:///"))
        try:
            with conn:
                conn.execute(statement, params)
        finally:
            conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Keys:
    """Key files of one test."""

    signing: Path
    public: Path


def keys_at(signing: Path) -> Keys:
    """The key files of the signing key ``signing`` (made by the first trail that loads it)."""
    return Keys(signing, signing.with_name(signing.name + ".pub"))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    signing = tmp_path / "keys" / "audit-signing.key"
    load_signing_key(signing, create=True)
    return Keys(signing, signing.with_name(signing.name + ".pub"))


def frame(payload: bytes) -> bytes:
    """One journal record as the writer stores it: length and CRC32C (little endian), payload."""
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def trail_settings(url: str, keys: Keys, *, hmac_key: bytes = HMAC_KEY,
                   **fields: Any) -> AuditSettings:
    """The ``[audit]`` settings of a trail on ``url`` with the test's signing key.

    The subject key is ``hmac_key`` (written beside the signing key; by default
    :data:`HMAC_KEY`, whose chain key is :data:`CHAIN_KEY`), the journal ``journal``
    in the key folder and the index ``external``, unless ``fields`` say otherwise.
    ``journal_segment_mb=0`` starts a new segment at every batch (the setting's bound,
    1, is not checked here).
    """
    hmac_file = keys.signing.parent / f"subject-hmac-{hmac_key.hex()[:8]}.key"
    if not hmac_file.exists():
        hmac_file.parent.mkdir(parents=True, exist_ok=True)
        hmac_file.write_text(hmac_key.hex() + "\n")
    segment = fields.pop("journal_segment_mb", None)
    fields = {"journal": keys.signing.parent / "journal", "index": "external", **fields}
    settings = AuditSettings(store=url, signing_key=keys.signing, hmac_key=hmac_file, **fields)
    return settings if segment is None else settings.model_copy(
        update={"journal_segment_mb": segment})


class IndexedTrail(JournalTrail):
    """A trail whose lane an :class:`Indexer` on a thread of this process follows.

    What ``guard audit index`` runs for each lane, without a process per trail: the
    test records and reads in one process, and :meth:`flush` hurries the indexer.
    """

    def __init__(self, settings: AuditSettings, *, timeout: float = 5.0) -> None:
        super().__init__(settings.model_copy(update={"index": "external"}), timeout=timeout)
        self.indexer = Indexer(self.journal.folder, self.store)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued before the call is in the store (indexed now)."""
        self.writer.flush(timeout)
        self.indexer.want(self.journal.next_offset)
        super().flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Close the chain, index the journal's end, then close the trail."""
        self.writer.close(timeout)
        self.indexer.close()
        super().close(timeout)


def make_trail(url: str, keys: Keys, *, timeout: float = 5.0, **fields: Any) -> IndexedTrail:
    """A trail of :func:`trail_settings`, indexed in this process (:class:`IndexedTrail`)."""
    return IndexedTrail(trail_settings(url, keys, **fields), timeout=timeout)


def make_event(kind: EventKind, **fields: Any) -> AuditEvent:
    """An event of ``kind``; a raw ``subject_id`` becomes its pseudonym under :data:`HMAC_KEY`."""
    raw = fields.pop("subject_id", None)
    if raw is not None:
        fields["subject"] = pseudonymise(HMAC_KEY, raw)
    fields.setdefault("event_id", new_event_id())
    fields.setdefault("ts", utc_now())
    return AuditEvent(kind=kind, **fields)


def record(trail: JournalTrail, event: AuditEvent) -> str:
    """Record a built event (its id, time and pseudonym kept); its id once durable."""
    fields = event.to_dict()
    for name in ("writer_id", "seq", "prev_hash", "hash"):
        del fields[name]
    return trail.record_fields(event.kind, fields)


def seed(store: Store, rows: Sequence[Row], checkpoints: Sequence[Checkpoint] = ()) -> None:
    """Add event rows and checkpoints to ``store`` as the indexer adds a journal's records."""
    records = [compact(row) for row in rows] + [checkpoint_record(c) for c in checkpoints]
    store.index_records(records, f"seed-{new_event_id()}", len(records))


def row_of(event: AuditEvent) -> Row:
    """The stored row of ``event``: its content columns as the writer builds them, its chain."""
    return (*content(event.kind, event.to_dict(), b"", event.ts, event.event_id),
            event.writer_id, event.seq, event.prev_hash, event.hash)


def linked(event: AuditEvent, writer_id: str, seq: int, prev_hash: str,
           key: ChainKey | None = None, chain: int = 3) -> AuditEvent:
    """``event`` placed in a chain, hashed in format ``chain`` (format 2 without ``key``)."""
    hash_, _record = Linker(writer_id, key, chain).link(row_of(event)[:-4], seq, prev_hash)
    return replace(event, writer_id=writer_id, seq=seq, prev_hash=prev_hash, hash=hash_)


def decision_event(**fields: Any) -> AuditEvent:
    """A decision event with plausible defaults, overridable field by field."""
    values: dict[str, Any] = {
        "caller": "svc:crm",
        "party_type": "internal",
        "country": "GB",
        "purpose": "relationship.management",
        "categories": ("contact.email",),
        "action": "read",
        "allowed": True,
        "reason": "allowed",
        "rule": ("rules.csv:1",),
        "lawful_basis": ("contract",),
        "policy_version": "sha256:test",
    }
    values.update(fields)
    return make_event(EventKind.DECISION, **values)


def acknowledged_until_killed(child: subprocess.Popen[bytes], count: int) -> list[str]:
    """Read the event ids ``child`` prints, SIGKILL it after ``count``; every complete line.

    Raises:
        AssertionError: it printed fewer than ``count`` (its stderr's tail says why).
    """
    assert child.stdout is not None
    acknowledged: list[str] = []
    try:
        for line in child.stdout:
            acknowledged.append(line.decode().strip())
            if len(acknowledged) >= count:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        rest = child.stdout.read()  # through its buffer: it may hold the start of a line
        assert child.stderr is not None
        err = child.stderr.read()
    acknowledged += [line for line in rest.decode().split("\n")[:-1] if line]  # complete lines
    assert len(acknowledged) >= count, err.decode()[-2000:]
    return acknowledged


def assert_lost_none_doubled_none(lane: Path, store_url: str, acknowledged: list[str],
                                  keys: Keys) -> None:
    """Every acknowledged event is in the store, every journal event once, and verify is ok."""
    journal_ids = [record[1][2:38].decode() for record in read_journal(lane)
                   if isinstance(record, tuple) and record[1].startswith(b"[")]
    store = open_store(store_url, create=False)
    stored = [row[0] for row in store.rows("SELECT event_id FROM audit_event")]
    report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    in_store = set(stored)
    assert [i for i in acknowledged if i not in in_store] == []
    assert sorted(stored) == sorted(journal_ids)  # every journal event, each once
    assert report.ok, report.problems


def journal_with_a_bad_second_record(folder: Path) -> None:
    """A journal of ``alpha``, ``bravo``, ``charlie`` whose ``bravo`` has one bit flipped."""
    journal = Journal(folder)
    journal.append([b"alpha", b"bravo", b"charlie"])
    journal.close()
    [(_, path)] = segments(folder)
    data = bytearray(path.read_bytes())
    data[8 + 5 + 8] ^= 0x01  # the first byte of "bravo"
    path.write_bytes(bytes(data))


def run_statements(url: str, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run ``(sql, params)`` pairs in one transaction on a SQLite or PostgreSQL store, the
    plain driver way (``?`` marks; a driver error: ValueError)."""
    try:
        if url.startswith("sqlite:///"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            try:
                with conn:
                    for sql, params in statements:
                        conn.execute(sql, params)
            finally:
                conn.close()
        else:
            with psycopg.connect(url) as pg:
                for sql, params in statements:
                    pg.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
    except (sqlite3.Error, psycopg.Error) as exc:
        raise ValueError(str(exc)) from exc


class Recording:
    """A real store that keeps every query it is asked (SQL and parameters)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self.queries: list[tuple[str, list[Any]]] = []

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.queries.append((sql, list(params)))
        return self.store.rows(sql, params)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        self.queries.append((sql, list(params)))
        return self.store.stream(sql, params)


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a write to its write end blocks in the kernel."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETFL, os.O_NONBLOCK)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write, b"x" * 65536)
    fcntl.fcntl(write, fcntl.F_SETFL, 0)
    return read, write


def rows_of(values: Sequence[Any]) -> list[Row]:
    """:func:`guard.audit._fields.decode_many`'s values as one row per event."""
    width = len(FIELD_NAMES)
    return [tuple(values[at:at + width]) for at in range(0, len(values), width)]
