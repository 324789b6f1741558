"""The hourly decision summary (``audit_hour``, docs/audit.md, migration 5): decisions
counted per hour and per chart dimension of the console's overview, added to in the
transaction that inserts the events, counting only the rows the insert stored.

Columns that may be null in ``audit_event`` are stored as ``''`` (country, route) and
``-1`` (allowed), so the primary key can hold them; :data:`RAW_KEY` is the same
expression over raw events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

from guard.audit._event import FIELD_NAMES

KEY_COLUMNS = ("hour", "reason", "caller", "purpose", "country", "http_route", "allowed")
"""The summary's key, in order: ``hour`` is the ``ts`` cut to the hour (``2026-11-29T20``)."""

HOUR_DDL = f"""CREATE TABLE IF NOT EXISTS audit_hour (
    hour TEXT NOT NULL,
    reason TEXT NOT NULL,
    caller TEXT NOT NULL,
    purpose TEXT NOT NULL,
    country TEXT NOT NULL,
    http_route TEXT NOT NULL,
    allowed INTEGER NOT NULL,
    decisions BIGINT NOT NULL,
    PRIMARY KEY ({", ".join(KEY_COLUMNS)})
)"""

RAW_DIMENSIONS = ("e.reason, e.caller, e.purpose, coalesce(e.country, ''), "
                  "coalesce(e.http_route, ''), coalesce(e.allowed, -1)")
"""The key but the hour, computed from raw events (alias ``e``), in :data:`KEY_COLUMNS` order."""
RAW_KEY = f"substr(e.ts, 1, 13), {RAW_DIMENSIONS}"
"""The whole summary key computed from raw events (alias ``e``)."""

_INTO = f"INSERT INTO audit_hour ({', '.join(KEY_COLUMNS)}, decisions) "
_UPSERT = (f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) "
           "DO UPDATE SET decisions = audit_hour.decisions + excluded.decisions")


def add_hours(source: str, where: str = "") -> str:
    """One statement adding the decisions among the rows ``source`` (aliased ``e``: the rows
    just inserted) names to the summary, those ``where`` (ending in `` AND ``) chooses.

    In key order, so concurrent writers (PostgreSQL replicas) lock summary rows in
    one order and cannot deadlock.
    """
    return (f"{_INTO}SELECT {RAW_KEY}, count(*) FROM {source} WHERE {where}"  # noqa: S608
            "e.kind = 'decision' GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7 "
            + _UPSERT)


BACKFILL = add_hours("audit_event e")
"""Fill an empty summary from the events already stored (the migration runs it once)."""
ADD_COUNTED = f"{_INTO}VALUES (?, ?, ?, ?, ?, ?, ?, ?) {_UPSERT}"
"""Add one key's count (a row of :func:`counted`) to the summary."""

_AT = [FIELD_NAMES.index(name) for name in ("kind", "ts", *KEY_COLUMNS[1:])]
_HOUR = itemgetter(slice(13))


def count_hours(counts: Counter[tuple[Any, ...]], values: list[Any]) -> None:
    """Count events (:func:`guard.audit._fields.decode_many`'s values) by kind and summary key."""
    kind, ts, *rest = (values[at::len(FIELD_NAMES)] for at in _AT)
    counts.update(zip(kind, map(_HOUR, ts), *rest, strict=True))


def counted(counts: Counter[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """The decisions :func:`count_hours` counted, as summary rows (nulls as stored)."""
    return ((*key[:4], "" if country is None else country, "" if route is None else route,
             -1 if allowed is None else allowed, count)
            for (kind, *key, country, route, allowed), count in counts.items()
            if kind == "decision")
