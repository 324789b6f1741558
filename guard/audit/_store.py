"""What every audit store does, and opening one from a URL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from guard._errors import AuditUnavailableError, ConfigError, GuardError


class AuditStoreError(GuardError):
    """An audit store that does not exist or is not an audit store (for readers)."""


class RecordRefusedError(AuditUnavailableError):
    """The store refuses a record itself (a value no column can hold, its place in its chain
    another event's): retrying cannot help."""


class Store(Protocol):
    """An audit store: the journal's index (idempotent batches) and SQL reads (``?`` params).

    How far the index has read a journal: :func:`indexed_offset`.
    """

    url: str

    def index_records(self, records: Sequence[bytes], journal: str, next_offset: int) -> None:
        """Add journal records (their bytes, in order) and save the offset, in one transaction
        (ValueError: a record is not a journal record; :class:`RecordRefusedError`: the store
        refuses a record's values or its writer and seq; nothing is added either way)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query and return every row."""

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Run a read query and yield rows without holding them all in memory."""

    def close(self) -> None:
        """Release connections."""


def indexed_offset(store: Store, journal: str) -> int:
    """How far the index of ``store`` has read the journal ``journal`` (0: not at all)."""
    found = store.rows("SELECT next_offset FROM audit_journal_offset WHERE journal = ?",
                       (journal,))
    return int(found[0][0]) if found else 0


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL (``sqlite:////abs/path`` for absolute paths)."""
    return Path(url.removeprefix("sqlite:///"))


def open_store(url: str, *, create: bool = True, timeout: float = 5.0) -> Store:
    """Open the store ``url`` names: ``sqlite:///PATH`` or ``postgresql://...`` (or
    ``postgres://``), waiting ``timeout`` seconds at most for a lock or a connection.

    ``create``: make the SQLite file and the schema if missing; readers pass False and
    get :class:`AuditStoreError` for a store that does not exist.
    """
    if url.startswith("sqlite:///"):
        from guard.audit._sqlite import SqliteStore

        return SqliteStore(sqlite_path(url), create=create, timeout=timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from guard.audit._postgres import PostgresStore

        return PostgresStore(url, create=create, timeout=timeout)
    raise ConfigError(
        f"audit store URL {url!r} is not sqlite:///PATH or postgresql://USER@HOST/DB"
    )
