"""The hourly decision summary: decisions counted per hour and per chart dimension.

The console's overview groups decisions by hour, reason, caller, purpose,
country, route and outcome. At millions of events that scan costs seconds, so
the store keeps the same counts in ``audit_hour``, added to in the transaction
that inserts the events by one statement (:func:`add_hours`) that counts the
rows that insert stored, and only those (a row whose ``event_id`` is already
stored is skipped by ``ON CONFLICT DO NOTHING``): SQLite's rows after the
table's largest ``rowid`` before the insert, PostgreSQL's rows returned by the
insert. The summary is therefore exact whenever the events are. SQLite's index
counts the rows in Python instead (:func:`hour_counts`, a tenth of an index
transaction's instructions saved) when the insert stored every row it was given
and every key value is of a type SQL and Python group alike.

Columns that may be null in ``audit_event`` are stored as ``''`` (country,
route) and ``-1`` (allowed), so the primary key can hold them;
:data:`RAW_KEY` is the same expression over raw events.
"""

from __future__ import annotations

from collections.abc import Sequence
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

_ADD = (
    f"INSERT INTO audit_hour ({', '.join(KEY_COLUMNS)}, decisions) "  # noqa: S608 - constant SQL
    "SELECT {RAW_KEY}, count(*) FROM {source} WHERE {where}e.kind = 'decision' "
    "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7 "
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) "
    "DO UPDATE SET decisions = audit_hour.decisions + excluded.decisions"
)


def add_hours(source: str, where: str = "") -> str:
    """One statement adding the decisions among the rows ``source`` names to the summary.

    In key order, so concurrent writers (PostgreSQL replicas) lock summary rows in
    one order and cannot deadlock.

    Args:
        source: Event rows aliased ``e``: the rows just inserted.
        where: A condition (ending in `` AND ``) choosing them among ``source``.
    """
    return _ADD.format(RAW_KEY=RAW_KEY, source=source, where=where)


BACKFILL = add_hours("audit_event e")
"""Fill an empty summary from the events already stored (the migration runs it once)."""


_KEY_AT = tuple(FIELD_NAMES.index(name) for name in (
    "kind", "ts", "reason", "caller", "purpose", "country", "http_route", "allowed"))
ADD_COUNTED = (
    f"INSERT INTO audit_hour ({', '.join(KEY_COLUMNS)}, decisions) "  # noqa: S608 - constant SQL
    f"VALUES ({', '.join('?' * (len(KEY_COLUMNS) + 1))}) "
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) "
    "DO UPDATE SET decisions = audit_hour.decisions + excluded.decisions"
)
"""Add one key's count (its :data:`KEY_COLUMNS` values, then the count)."""


def hour_counts(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]] | None:
    """The summary's additions for ``rows`` (every one of them stored), in key order.

    The key of :data:`RAW_KEY`, computed here. None when a key value is not text (an
    ``allowed`` not an int, or null where null is allowed): SQL would group the text it
    stores of such a value, which Python need not group alike (``1`` and ``1.0``), so
    :func:`add_hours` counts those rows.

    Args:
        rows: Event rows in ``FIELD_NAMES`` order.
    """
    kind_at, ts_at, reason_at, caller_at, purpose_at, country_at, route_at, allowed_at = _KEY_AT
    counts: dict[tuple[Any, ...], int] = {}
    for row in rows:
        if row[kind_at] != "decision":
            continue
        ts, reason, caller, purpose = row[ts_at], row[reason_at], row[caller_at], row[purpose_at]
        country, route, allowed = row[country_at], row[route_at], row[allowed_at]
        if not (type(ts) is str and type(reason) is str and type(caller) is str
                and type(purpose) is str and (country is None or type(country) is str)
                and (route is None or type(route) is str)
                and (allowed is None or type(allowed) is int)):
            return None
        key = (ts[:13], reason, caller, purpose, "" if country is None else country,
               "" if route is None else route, -1 if allowed is None else allowed)
        counts[key] = counts.get(key, 0) + 1
    return [(*key, count) for key, count in sorted(counts.items())]
