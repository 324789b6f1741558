"""The one audit schema (SQLite and PostgreSQL), its migrations and row mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._event import FIELD_NAMES
from guard.audit._summary import BACKFILL, HOUR_DDL

SCHEMA_VERSION = 7
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
    7: (),  # SQLite's subject index made anew (SQLITE_MIGRATIONS)
}

# The subject's one token in audit_subject (SQLite): 's' and the UTF-8 bytes of its first 12
# characters in hex (so an empty subject still has one, and any text is one token). A prefix:
# subjects are keyed pseudonyms, whose first 12 hex digits (48 bits) are one subject's among
# millions; two subjects sharing one only make a look-up read the other's rows, which its
# ``e.subject = ?`` drops. 25 characters where the whole pseudonym took 129; FTS5's ``ascii``
# tokenizer reads them as ``unicode61`` (its default) would, for less.
SUBJECT_TOKEN = "'s' || hex(substr({}, 1, 12))"
"""The token's expression of a subject (``{}``: its column or parameter)."""
ADD_SUBJECTS = (
    f"INSERT INTO audit_subject (rowid, token) SELECT rowid, {SUBJECT_TOKEN.format('subject')} "  # noqa: S608 - constant SQL
    "FROM audit_event WHERE rowid > ? AND rowid <= ? AND subject IS NOT NULL"
)
"""The tokens of the events with ``rowid`` in (``?``, ``?``]: the index adds those it has
just inserted; the migration fills the index with it."""
# Deletes and changes of audit_event keep the index exact (a tamperer's too); its inserts are
# the index's own (``ADD_SUBJECTS`` after the rows, where a trigger per row cost a tenth of
# the transaction's instructions). A row stored around the index (a bulk load before its
# ``fill_subject_index``, a forged row) has no entry, and FTS5 takes the removal of an entry
# it lacks for damage ("database disk image is malformed"): an entry is removed only if held.
_OLD_TOKEN, _NEW_TOKEN = SUBJECT_TOKEN.format("old.subject"), SUBJECT_TOKEN.format("new.subject")
_HELD = ("EXISTS (SELECT 1 FROM audit_subject WHERE audit_subject MATCH "  # noqa: S608
         f"{_OLD_TOKEN} AND rowid = old.rowid)")
_SUBJECT_TRIGGERS = {
    "remove": f"AFTER DELETE ON audit_event WHEN old.subject IS NOT NULL AND {_HELD} BEGIN "  # noqa: S608
              "INSERT INTO audit_subject (audit_subject, rowid, token) VALUES "
              f"('delete', old.rowid, {_OLD_TOKEN}); END",
    "change": "AFTER UPDATE OF subject ON audit_event BEGIN "
              "INSERT INTO audit_subject (audit_subject, rowid, token) SELECT 'delete', "
              f"old.rowid, {_OLD_TOKEN} WHERE old.subject IS NOT NULL AND {_HELD}; "
              "INSERT INTO audit_subject (rowid, token) SELECT new.rowid, "
              f"{_NEW_TOKEN} WHERE new.subject IS NOT NULL; END",
}
_FILL_STEP = 1_000_000
SUBJECT_INDEX_DDL = ("CREATE VIRTUAL TABLE audit_subject USING fts5"
                     "(token, content='', detail=none, columnsize=0, tokenize='ascii')")
"""SQLite's subject index as migration 7 makes it (and as ``sqlite_master`` keeps its text:
``guard audit verify`` names any other table of that name)."""


def fill_subject_index(execute: Callable[..., Any], after: int = 0) -> None:
    """Add the tokens of every event after ``rowid`` ``after`` through ``execute(sql,
    params=())``, a million rows at a time, logging how far it is on a larger store."""
    last = int(execute("SELECT coalesce(max(rowid), 0) FROM audit_event").fetchone()[0])
    for low in range(after, last, _FILL_STEP):
        execute(ADD_SUBJECTS, (low, low + _FILL_STEP))
        if last - after > _FILL_STEP:
            _log.warning("audit store: the subject index holds the events up to row %d of %d",
                         min(low + _FILL_STEP, last), last)
    if last > after:  # its segments as one, out of the way of the index's small ones (a
        # bulk fill's stay at the level FTS5 merges each new transaction's into: +14,000
        # instructions a record at 1 M events; 0.1 s of CPU per million)
        execute("INSERT INTO audit_subject (audit_subject) VALUES ('optimize')")


SQLITE_MIGRATIONS: dict[int, tuple[str | Callable[[Callable[..., Any]], None], ...]] = {
    # The subject's events found through a full-text index of one token per event, in
    # place of the (subject, ts) B-tree: FTS5 writes each transaction's entries as one
    # sorted segment and merges segments later, where a B-tree keyed by a random
    # pseudonym puts each new entry on a page of its own (docs/performance.md). Schema 6
    # made it with the whole subject as the token and a trigger per insert; schema 7
    # makes it anew as above (a version-5 store goes straight to it).
    7: (
        "DROP TRIGGER IF EXISTS audit_subject_add",
        "DROP TRIGGER IF EXISTS audit_subject_remove",
        "DROP TRIGGER IF EXISTS audit_subject_change",
        "DROP TABLE IF EXISTS audit_subject",  # a migration run again fills it anew
        SUBJECT_INDEX_DDL,
        fill_subject_index,
        *(f"CREATE TRIGGER IF NOT EXISTS audit_subject_{name} {body}"
          for name, body in _SUBJECT_TRIGGERS.items()),
        "DROP INDEX IF EXISTS audit_event_subject",
    ),
}
SUBJECT_MATCH = {
    "sqlite": "e.subject = ? AND e.rowid IN (SELECT rowid FROM audit_subject "  # noqa: S608
              f"WHERE audit_subject MATCH {SUBJECT_TOKEN.format('?')})",
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
            if callable(statement):
                statement(execute)
            else:
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
    return (cp.checkpoint_id, cp.writer_id, cp.seq, cp.hash, cp.ts, cp.kind.value, cp.key_id,
            cp.signature, cp.terms)


def row_checkpoint(row: Sequence[Any]) -> Checkpoint:
    """Rebuild a checkpoint from a row selected with ``CHECKPOINT_COLUMNS``."""
    return Checkpoint(row[0], row[1], int(row[2]), row[3], row[4], CheckpointKind(row[5]),
                      row[6], row[7], row[8])
