"""The register's table in the audit store (SQLite or PostgreSQL): append, read, watch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Any

from guard._errors import AuditUnavailableError
from guard.audit._store import Store, open_store, sqlite_path
from guard.rights._entries import Entry, EntryKind, RegisterUnreadableError

if TYPE_CHECKING:
    import psycopg

CHANNEL = "guard_register"
"""PostgreSQL notification channel: the payload is the changed subject's pseudonym."""

COLUMNS = ("subject, seq, entry_id, kind, purpose, effective, recorded_at, recorded_by, ref, "
           "event_id")
_SELECT = f"SELECT {COLUMNS} FROM subject_register"  # noqa: S608 - constant SQL
_INSERT = (
    f"INSERT INTO subject_register ({COLUMNS}) "  # noqa: S608 - constant SQL
    "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ? "
    "FROM subject_register WHERE subject = ? RETURNING seq"
)
_RETRIES = 8


def is_postgres(url: str) -> bool:
    """Whether an audit store URL names PostgreSQL."""
    return url.startswith(("postgresql://", "postgres://"))


def _entry(row: tuple[Any, ...]) -> Entry:
    """The entry of a stored row; :class:`RegisterUnreadableError` for a row the guard never
    wrote (a writer to the store's), one line, never another exception."""
    try:
        if type(row[1]) is not int:
            raise TypeError(f"its place (seq) {row[1]!r} is no number")
        return Entry(str(row[0]), row[1], str(row[2]), EntryKind(row[3]), str(row[4]),
                     date.fromisoformat(str(row[5])), str(row[6]), str(row[7]), str(row[8]),
                     str(row[9]))
    except (ValueError, TypeError) as exc:
        raise RegisterUnreadableError(
            f"subject register entry {str(row[2])[:64]!r} cannot be read ({exc}): it was "
            "written around the guard; run guard audit verify") from None


class RegisterStore:
    """The ``subject_register`` table of an audit store (created by its migrations).

    Args:
        url: The audit store URL (``sqlite:///PATH`` or ``postgresql://...``).
        timeout: Seconds to wait for a lock or a connection.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.postgres = is_postgres(url)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._store: Store = open_store(url, create=True, timeout=timeout)
        self._store.rows("SELECT count(*) FROM schema_version")  # migrates PostgreSQL now
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[tuple[Any, ...]] | None = None
        self._taken: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
        """A seq another writer took first; :attr:`_failed`: a write refused."""
        self._failed: tuple[type[Exception], ...] = (sqlite3.Error,)
        if self.postgres:  # psycopg is imported only for PostgreSQL (a CLI starts faster)
            import psycopg

            self._taken, self._failed = (psycopg.errors.UniqueViolation,), (psycopg.Error,)

    # -- reads -------------------------------------------------------------------------------

    def history(self, subject: str) -> list[Entry]:
        """Every entry of one subject, oldest first."""
        rows = self._store.rows(f"{_SELECT} WHERE subject = ? ORDER BY seq", (subject,))
        return [_entry(row) for row in rows]

    def every_entry(self) -> Iterator[Entry]:
        """Every entry, grouped by subject, oldest first."""
        for row in self._store.stream(f"{_SELECT} ORDER BY subject, seq"):
            yield _entry(row)

    def last_rowid(self) -> int:
        """SQLite: the highest row id so far (changes are found by row id)."""
        rows = self._store.rows("SELECT COALESCE(MAX(rowid), 0) FROM subject_register")
        return int(rows[0][0])

    def changed_since(self, rowid: int) -> tuple[int, list[str]]:
        """SQLite: subjects with entries after ``rowid``, and the new highest row id."""
        rows = self._store.rows(
            "SELECT rowid, subject FROM subject_register WHERE rowid > ? ORDER BY rowid",
            (rowid,))
        if not rows:
            return rowid, []
        return int(rows[-1][0]), list(dict.fromkeys(str(r[1]) for r in rows))

    # -- writes ------------------------------------------------------------------------------

    def append(self, entry: Entry) -> Entry:
        """Append ``entry`` as the subject's next one (its ``seq`` is assigned here).

        Raises:
            AuditUnavailableError: the store refused the write.
        """
        values = (entry.subject, entry.entry_id, entry.kind.value, entry.purpose,
                  entry.effective.isoformat(), entry.recorded_at, entry.recorded_by,
                  entry.ref, entry.event_id, entry.subject)
        with self._lock:
            for _ in range(_RETRIES):  # two writers may race for the same next seq
                try:
                    seq = self._append_pg(values) if self.postgres else \
                        self._append_sqlite(values)
                except self._taken:
                    continue
                except self._failed as exc:
                    raise AuditUnavailableError(
                        f"the subject register refused the entry: {exc}".splitlines()[0]
                    ) from exc
                return Entry(entry.subject, seq, entry.entry_id, entry.kind, entry.purpose,
                             entry.effective, entry.recorded_at, entry.recorded_by, entry.ref,
                             entry.event_id)
        raise AuditUnavailableError("the subject register stayed busy; entry not recorded")

    def _append_sqlite(self, values: tuple[Any, ...]) -> int:
        conn = self._sqlite
        if conn is None:
            conn = self._sqlite = sqlite3.connect(
                sqlite_path(self.url), timeout=self._timeout, isolation_level=None,
                check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")
        row = conn.execute(_INSERT, values).fetchone()
        return int(row[0])

    def _append_pg(self, values: tuple[Any, ...]) -> int:
        import psycopg

        conn = self._pg
        if conn is None or conn.closed:
            conn = self._pg = psycopg.connect(self.url, connect_timeout=max(1, int(self._timeout)))
        try:
            with conn.transaction():
                # Writers of one subject take turns, so the next seq is never contended.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (values[0],))
                row = conn.execute(_INSERT.replace("?", "%s"), values).fetchone()
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, values[0]))
        except psycopg.OperationalError:
            conn.close()
            raise
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        """Release connections."""
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            if self._pg is not None:
                self._pg.close()
        self._store.close()
