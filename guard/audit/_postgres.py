"""The PostgreSQL audit store: psycopg 3 with a connection pool, shared by replicas."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from guard._errors import AuditUnavailableError
from guard._pgurl import one_line, shown_url
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import decode_many
from guard.audit._schema import (
    EVENT_COLUMNS,
    INSERT_CHECKPOINT,
    SAVE_OFFSET,
    SCHEMA_VERSION,
    checkpoint_row,
    migrate,
)
from guard.audit._store import AuditStoreError, RecordRefusedError
from guard.audit._summary import add_hours

_MIGRATION_LOCK = 0x67756172  # advisory lock id: one replica migrates at a time


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


_INSERT_CHECKPOINT = _pg(INSERT_CHECKPOINT)
_SAVE_OFFSET = _pg(SAVE_OFFSET)
_INTEGERS = {"allowed": "integer", "http_status": "integer", "latency_us": "bigint",
             "seq": "bigint"}
_COLUMNS_FROM_JSON = ", ".join(
    f"(r ->> {i})::{_INTEGERS[name]}" if name in _INTEGERS else f"r ->> {i}"
    for i, name in enumerate(FIELD_NAMES))
_FROM_JSON = (
    "WITH src AS MATERIALIZED (SELECT t::jsonb r FROM unnest(string_to_array(%s, E'\\n')) t), "  # noqa: S608
    f"e AS (INSERT INTO audit_event ({EVENT_COLUMNS}) SELECT {_COLUMNS_FROM_JSON} "
    "FROM src ON CONFLICT (event_id) DO NOTHING "
    "RETURNING kind, ts, reason, caller, purpose, country, http_route, allowed), "
    f"h AS ({add_hours('e')}) "
    f"SELECT count(*) FROM src WHERE jsonb_array_length(r) <> {len(FIELD_NAMES)}"
)
"""Build event rows from event records (one a line) in the server, insert them, add the
decisions inserted to the summary; count the records that are not one value per column."""


class PostgresStore:
    """An audit store in a PostgreSQL database (schema created on first write; ``create``
    and ``timeout`` as :func:`~guard.audit.open_store` takes them)."""

    def __init__(self, url: str, *, create: bool = True, timeout: float = 5.0) -> None:
        self.url = url
        self._create = create
        self._timeout = timeout
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: psycopg.Connection[tuple[Any, ...]] | None = None  # writes only
        self._pool = ConnectionPool(url, min_size=1, max_size=4, open=False, timeout=timeout,
                                    reconnect_timeout=0,
                                    kwargs={"connect_timeout": max(1, int(timeout))})
        self._pool.open(wait=False)
        if not create:
            try:
                self._ensure_schema()
            except (psycopg.Error, PoolTimeout, AuditStoreError) as exc:
                self._pool.close()
                if isinstance(exc, AuditStoreError):
                    raise
                raise AuditStoreError(f"cannot read audit store {shown_url(url)}: {one_line(exc)}"
                                      ) from exc

    def _ensure_schema(self) -> None:
        """Check the store holds the audit schema (a reader) or create it; migrate it."""
        if self._schema_ready:
            return
        with (
            self._schema_lock,
            psycopg.connect(self.url, connect_timeout=max(1, int(self._timeout))) as conn,
        ):
            if self._schema_ready:
                return
            if conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,):
                if not self._create:
                    raise AuditStoreError(f"{shown_url(self.url)} holds no audit store")
            elif conn.execute("SELECT max(version) FROM schema_version"
                              ).fetchone() == (SCHEMA_VERSION,):
                self._schema_ready = True
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                migrate(conn.execute, "%s")
            self._schema_ready = True

    def _connection(self) -> psycopg.Connection[Any]:
        self._ensure_schema()
        conn = self._writer
        if conn is None or conn.closed:
            conn = self._writer = psycopg.connect(
                self.url, connect_timeout=max(1, int(self._timeout)), autocommit=True
            )
        return conn

    def index_records(self, records: Sequence[bytes], journal: str, next_offset: int) -> None:
        """Add journal records and save the offset, in one transaction.

        The server builds the event rows from the records' JSON (``jsonb``), so
        the client only joins the records' bytes: its CPU per record is a fraction
        of decoding and copying the rows (``bench/index_cost.py``).
        ``synchronous_commit`` is off for it, since the journal is the durable
        record and a lost index transaction is read again.

        Raises:
            ValueError: a record is not a journal record.
        """
        others = [r for r in records if r[:1] != b"["]
        checkpoints = decode_many(others)[1] if others else []
        events = [r for r in records if r[:1] == b"["]
        lines = b"\n".join(events)  # the server parses each record on its own
        if lines.count(b"\n") > max(0, len(events) - 1):
            raise ValueError("not an audit journal record: a line break in an event's record")
        try:
            with self._write_lock:
                conn = self._connection()
                try:
                    with conn.transaction():
                        conn.execute("SET LOCAL synchronous_commit = off")
                        got = conn.execute(_FROM_JSON, (lines.decode(),)).fetchone() \
                            if events else (0,)
                        if got is None or got[0]:
                            raise ValueError(f"{got[0] if got else '?'} audit journal record(s) "
                                             f"are not {len(FIELD_NAMES)} columns")
                        if checkpoints:
                            conn.cursor().executemany(
                                _INSERT_CHECKPOINT, [checkpoint_row(c) for c in checkpoints])
                        conn.execute(_SAVE_OFFSET, (journal, next_offset))
                except psycopg.OperationalError:
                    conn.close()
                    raise
        except (psycopg.Error, PoolTimeout) as exc:
            refused = isinstance(exc, psycopg.DataError | psycopg.IntegrityError)  # the record's
            raise (RecordRefusedError if refused else AuditUnavailableError)(
                f"audit store {shown_url(self.url)} refused the index write: {one_line(exc)}"
            ) from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            self._ensure_schema()
            with self._pool.connection() as conn:
                return list(conn.execute(_pg(sql), tuple(params)).fetchall())
        except (psycopg.Error, PoolTimeout) as exc:
            raise AuditStoreError(f"audit store {shown_url(self.url)}: {one_line(exc)}") from exc

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Yield rows through a server-side cursor."""
        try:
            self._ensure_schema()
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(name="guard_audit_stream") as cur,
            ):
                cur.itersize = 5000
                cur.execute(_pg(sql), tuple(params))
                yield from cur
        except (psycopg.Error, PoolTimeout) as exc:
            raise AuditStoreError(f"audit store {shown_url(self.url)}: {one_line(exc)}") from exc

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
        self._pool.close()
