"""The one audit schema (SQLite and PostgreSQL), its migrations and row mapping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._event import FIELD_NAMES
from guard.audit._summary import MIGRATION as SUMMARY_MIGRATION

SCHEMA_VERSION = 5

# Portable DDL: the same text runs on SQLite and PostgreSQL.
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
        "CREATE INDEX IF NOT EXISTS subject_register_recorded ON subject_register (recorded_at)",
    ),
    # The chain's signed terms (hash format, checkpoint bounds); null on older checkpoints.
    3: ("ALTER TABLE audit_checkpoint ADD COLUMN terms TEXT",),
    # Policy events are rare among millions of decisions: the console's policy history.
    4: (
        "CREATE INDEX IF NOT EXISTS audit_event_policy ON audit_event (ts) "
        "WHERE kind IN ('policy_loaded', 'policy_rejected')",
    ),
    # Decisions counted per hour for the console's charts, back-filled from the events.
    5: SUMMARY_MIGRATION,
}

JOURNAL_OFFSET_DDL = (
    "CREATE TABLE IF NOT EXISTS audit_journal_offset "
    "(journal TEXT PRIMARY KEY, next_offset BIGINT NOT NULL)"
)
"""How far the index has read each journal; written in the transaction of the rows it covers."""
INDEXED_OFFSET = "SELECT next_offset FROM audit_journal_offset WHERE journal = ?"
SAVE_OFFSET = (
    "INSERT INTO audit_journal_offset (journal, next_offset) VALUES (?, ?) "
    "ON CONFLICT (journal) DO UPDATE SET next_offset = excluded.next_offset"
)


def migrate(execute: Callable[..., Any], mark: str = "?") -> None:
    """Bring a store's schema to :data:`SCHEMA_VERSION`, in the caller's transaction.

    Args:
        execute: The connection's ``execute(sql, params=())``, returning a cursor.
        mark: The driver's parameter placeholder.
    """
    execute("CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    row = execute("SELECT max(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    for version in range(current + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[version]:
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
