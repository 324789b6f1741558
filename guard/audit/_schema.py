"""The one audit schema (SQLite and PostgreSQL), its migrations and row mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._event import FIELD_NAMES
from guard.audit._summary import BACKFILL, HOUR_DDL

SCHEMA_VERSION = 6
_log = logging.getLogger("guard.audit")

# Portable DDL: the same text runs on SQLite and PostgreSQL (then SQLITE_MIGRATIONS' on SQLite).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS audit_event (
            event_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            ts TEXT NOT NULL,
            caller TEXT NOT NULL,
            party_type TEXT,
            country TEXT,
            purpose TEXT NOT NULL,
            categories TEXT NOT NULL,
            action TEXT NOT NULL,
            allowed INTEGER,
            reason TEXT NOT NULL,
            rule TEXT NOT NULL,
            lawful_basis TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            subject TEXT,
            http_method TEXT,
            http_route TEXT,
            http_status INTEGER,
            trace_id TEXT,
            span_id TEXT,
            latency_us BIGINT,
            decision_ref TEXT,
            detail TEXT,
            writer_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (writer_id, seq)
        )""",
        "CREATE INDEX IF NOT EXISTS audit_event_subject ON audit_event (subject, ts)",
        "CREATE INDEX IF NOT EXISTS audit_event_ts ON audit_event (ts)",
        # Partial: only outcome events carry decision_ref, so decisions cost no index entry.
        "CREATE INDEX IF NOT EXISTS audit_event_decision_ref ON audit_event (decision_ref) "
        "WHERE decision_ref IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS audit_checkpoint (
            checkpoint_id TEXT PRIMARY KEY,
            writer_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            key_id TEXT NOT NULL,
            signature TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS audit_checkpoint_writer ON audit_checkpoint (writer_id, seq)",
    ),
    # The subject register (POLICY-SPEC §4): append-only, subjects as HMAC pseudonyms.
    2: (
        """CREATE TABLE IF NOT EXISTS subject_register (
            subject TEXT NOT NULL,
            seq BIGINT NOT NULL,
            entry_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            purpose TEXT NOT NULL,
            effective TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            recorded_by TEXT NOT NULL,
            ref TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (subject, seq)
        )""",
    ),
    # The chain's signed terms (hash format, checkpoint bounds); null on older checkpoints.
    3: ("ALTER TABLE audit_checkpoint ADD COLUMN terms TEXT",),
    # Policy events are rare among millions of decisions: the console's policy history.
    4: (
        "CREATE INDEX IF NOT EXISTS audit_event_policy ON audit_event (ts) "
        "WHERE kind IN ('policy_loaded', 'policy_rejected')",
    ),
    # Decisions counted per hour for the console's charts, back-filled from the events.
    5: (HOUR_DDL, BACKFILL),
    # How far the index has read each journal, written in the transaction of the rows it
    # covers (made by the store's first offset read before); an index nothing read.
    6: (
        "CREATE TABLE IF NOT EXISTS audit_journal_offset "
        "(journal TEXT PRIMARY KEY, next_offset BIGINT NOT NULL)",
        "DROP INDEX IF EXISTS subject_register_recorded",
    ),
}

# The subject's one token in audit_subject (SQLite): 's' and its UTF-8 bytes in hex (so an
# empty subject still has one).
_SUBJECT_TRIGGERS = {
    "add": "AFTER INSERT ON audit_event WHEN new.subject IS NOT NULL BEGIN "
           "INSERT INTO audit_subject (rowid, token) VALUES "
           "(new.rowid, 's' || hex(new.subject)); END",
    "remove": "AFTER DELETE ON audit_event WHEN old.subject IS NOT NULL BEGIN "
              "INSERT INTO audit_subject (audit_subject, rowid, token) VALUES "
              "('delete', old.rowid, 's' || hex(old.subject)); END",
    "change": "AFTER UPDATE OF subject ON audit_event BEGIN "
              "INSERT INTO audit_subject (audit_subject, rowid, token) SELECT 'delete', "
              "old.rowid, 's' || hex(old.subject) WHERE old.subject IS NOT NULL; "
              "INSERT INTO audit_subject (rowid, token) SELECT new.rowid, "
              "'s' || hex(new.subject) WHERE new.subject IS NOT NULL; END",
}
SQLITE_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # The subject's events found through a full-text index of one token per event, in
    # place of the (subject, ts) B-tree: FTS5 writes each transaction's entries as one
    # sorted segment and merges segments later, where a B-tree keyed by a random
    # pseudonym puts each new entry on a page of its own (docs/performance.md). Kept
    # by triggers, so every insert, delete or change of audit_event keeps it exact.
    6: (
        "DROP TABLE IF EXISTS audit_subject",  # a migration run again fills it anew
        "CREATE VIRTUAL TABLE audit_subject USING fts5"
        "(token, content='', detail=none, columnsize=0)",
        "INSERT INTO audit_subject (rowid, token) SELECT rowid, 's' || hex(subject) "
        "FROM audit_event WHERE subject IS NOT NULL",
        *(f"CREATE TRIGGER IF NOT EXISTS audit_subject_{name} {body}"
          for name, body in _SUBJECT_TRIGGERS.items()),
        "DROP INDEX IF EXISTS audit_event_subject",
    ),
}
SUBJECT_MATCH = {
    "sqlite": "e.subject = ? AND e.rowid IN (SELECT rowid FROM audit_subject "
              "WHERE audit_subject MATCH 's' || hex(?))",
    "postgresql": "e.subject = ?",
}
"""The condition choosing one subject's events of ``audit_event e``, by store kind: each
``?`` is the subject."""
SAVE_OFFSET = (
    "INSERT INTO audit_journal_offset (journal, next_offset) VALUES (?, ?) "
    "ON CONFLICT (journal) DO UPDATE SET next_offset = excluded.next_offset"
)


def migrate(execute: Callable[..., Any], mark: str = "?") -> None:
    """Bring a store's schema to :data:`SCHEMA_VERSION`, in the caller's transaction.

    Args:
        execute: The connection's ``execute(sql, params=())``, returning a cursor.
        mark: The driver's parameter placeholder: ``?`` is SQLite's (which also runs
            :data:`SQLITE_MIGRATIONS`), ``%s`` PostgreSQL's.
    """
    execute("CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    row = execute("SELECT max(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if 0 < current < SCHEMA_VERSION:  # a store in use: the upgrade may read every event
        _log.warning("upgrading the audit store's schema from version %d to %d: a migration "
                     "may read every stored event once; writers wait until it ends",
                     current, SCHEMA_VERSION)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in (*MIGRATIONS[version],
                          *(SQLITE_MIGRATIONS.get(version, ()) if mark == "?" else ())):
            execute(statement)
        execute(f"INSERT INTO schema_version (version, applied_at) VALUES ({mark}, {mark})",  # noqa: S608
                (version, datetime.now(UTC).isoformat()))


EVENT_COLUMNS = ", ".join(FIELD_NAMES)
INSERT_EVENT = (
    f"INSERT INTO audit_event ({EVENT_COLUMNS}) VALUES ({', '.join('?' * len(FIELD_NAMES))}) "  # noqa: S608 - constant SQL
    "ON CONFLICT (event_id) DO NOTHING"
)
CHECKPOINT_COLUMNS = "checkpoint_id, writer_id, seq, hash, ts, kind, key_id, signature, terms"
INSERT_CHECKPOINT = (
    f"INSERT INTO audit_checkpoint ({CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608 - constant SQL
    "ON CONFLICT (checkpoint_id) DO NOTHING"
)


Row = tuple[Any, ...]
"""An event as column values in ``EVENT_COLUMNS`` order."""


def checkpoint_row(cp: Checkpoint) -> tuple[Any, ...]:
    """The column values of one checkpoint."""
    return (cp.checkpoint_id, cp.writer_id, cp.seq, cp.hash, cp.ts, cp.kind.value, cp.key_id,
            cp.signature, cp.terms)


def row_checkpoint(row: Sequence[Any]) -> Checkpoint:
    """Rebuild a checkpoint from a row selected with ``CHECKPOINT_COLUMNS``."""
    return Checkpoint(row[0], row[1], int(row[2]), row[3], row[4], CheckpointKind(row[5]),
                      row[6], row[7], row[8])
