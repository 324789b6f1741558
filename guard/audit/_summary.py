"""The hourly decision summary: decisions counted per hour and per chart dimension.

The console's overview groups decisions by hour, reason, caller, purpose,
country, route and outcome. At millions of events that scan costs seconds, so
the store keeps the same counts in ``audit_hour``, added to in the transaction
that inserts the events (:func:`summary_params` aggregates one batch in Python,
:data:`UPSERT_HOURS` adds it): the summary is exact whenever the events are.
Only events actually inserted count: a row whose ``event_id`` is already
stored (``ON CONFLICT DO NOTHING``) is left out (:func:`inserted`).

Columns that may be null in ``audit_event`` are stored as ``''`` (country,
route) and ``-1`` (allowed), so the primary key can hold them;
:data:`RAW_KEY` is the same expression over raw events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
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

BACKFILL = (
    f"INSERT INTO audit_hour ({', '.join(KEY_COLUMNS)}, decisions) "  # noqa: S608 - constant SQL
    f"SELECT {RAW_KEY}, count(*) FROM audit_event e WHERE e.kind = 'decision' "
    "GROUP BY 1, 2, 3, 4, 5, 6, 7"
)
"""Fill an empty summary from the events already stored (the migration runs it once)."""

MIGRATION = (HOUR_DDL, BACKFILL)
"""The schema migration that adds the summary."""

UPSERT_HOURS = (
    f"INSERT INTO audit_hour ({', '.join(KEY_COLUMNS)}, decisions) "  # noqa: S608 - constant SQL
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) "
    "DO UPDATE SET decisions = audit_hour.decisions + excluded.decisions"
)
"""Add one batch's counts (parameters from :func:`summary_params`)."""

_ID, _KIND, _TS = (FIELD_NAMES.index(n) for n in ("event_id", "kind", "ts"))
_REASON, _CALLER, _PURPOSE = (FIELD_NAMES.index(n) for n in ("reason", "caller", "purpose"))
_COUNTRY, _ROUTE, _ALLOWED = (FIELD_NAMES.index(n) for n in ("country", "http_route", "allowed"))


def summary_params(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The :data:`UPSERT_HOURS` parameters for the decisions among ``rows``.

    Sorted by key, so concurrent writers (PostgreSQL replicas) lock summary rows
    in one order and cannot deadlock.

    Args:
        rows: Event rows in ``FIELD_NAMES`` order (as inserted).
    """
    counts: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        if row[_KIND] != "decision":
            continue
        allowed = row[_ALLOWED]
        counts[(str(row[_TS])[:13], row[_REASON], row[_CALLER], row[_PURPOSE],
                row[_COUNTRY] or "", row[_ROUTE] or "",
                -1 if allowed is None else int(allowed))] += 1
    return [(*key, n) for key, n in sorted(counts.items())]


def inserted(rows: Sequence[Sequence[Any]], ids: Collection[str]) -> Sequence[Sequence[Any]]:
    """The rows an insert stored, from the event ids its ``RETURNING event_id`` gave back.

    All of them unless some were stored already; of two rows with one id in a
    batch, the first (the one an in-order insert keeps).

    Args:
        rows: The rows offered to ``INSERT ... ON CONFLICT (event_id) DO NOTHING``.
        ids: The event ids it returned.
    """
    if len(ids) == len(rows):  # then every id is distinct and was inserted
        return rows
    fresh = set(ids)
    kept = []
    for row in rows:
        if row[_ID] in fresh:
            fresh.discard(row[_ID])
            kept.append(row)
    return kept
