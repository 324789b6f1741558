"""The hourly decision summary: decisions counted per hour and per chart dimension.

The console's overview groups decisions by hour, reason, caller, purpose,
country, route and outcome. At millions of events that scan costs seconds, so
the store keeps the same counts in ``audit_hour``, added to in the transaction
that inserts the events: the insert returns the summary key of each row it
stored (:data:`RETURNING_KEY`; a row whose ``event_id`` is already stored,
skipped by ``ON CONFLICT DO NOTHING``, returns nothing), :func:`summary_params`
counts them in Python and :data:`UPSERT_HOURS` adds the counts. The summary is
therefore exact whenever the events are.

Columns that may be null in ``audit_event`` are stored as ``''`` (country,
route) and ``-1`` (allowed), so the primary key can hold them;
:data:`RAW_KEY` is the same expression over raw events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

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

RETURNING_KEY = (
    "RETURNING CASE WHEN kind = 'decision' THEN substr(ts, 1, 13) END, reason, caller, "
    "purpose, coalesce(country, ''), coalesce(http_route, ''), coalesce(allowed, -1)"
)
"""Appended to ``INSERT ... ON CONFLICT (event_id) DO NOTHING``: the summary key of each row
stored (a row already stored returns nothing; an event that is not a decision, no hour)."""


def summary_params(returned: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The :data:`UPSERT_HOURS` parameters for one batch: its decisions counted by key.

    Sorted by key, so concurrent writers (PostgreSQL replicas) lock summary rows
    in one order and cannot deadlock.

    Args:
        returned: The rows an insert ending in :data:`RETURNING_KEY` gave back.
    """
    counts = Counter(tuple(row) for row in returned)
    return sorted((*key, n) for key, n in counts.items() if key[0] is not None)
