"""The overview's chart data: the period's decisions grouped, each chart folded by the store.

Whole hours come from the store's hourly summary (``audit_hour``, kept in the
transaction that inserts the events, so exact); only the part of the first
hour inside the period is read from the raw events. Every reader opens a store
at the current schema (opening migrates it), so the summary is always there.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from guard.audit import Store
from guard.audit._event import TS_FORMAT
from guard.policy._compiled import CompiledPolicy
from middleware.console._subject import HOME_COUNTRY, safeguard

TOP = 10
NOT_HTTP = "(not HTTP)"


def overview_data(store: Store, since: str, policy: CompiledPolicy | None, *,
                  now: datetime | None = None, summary: bool = True) -> dict[str, Any]:
    """Every chart's series for decisions at or after ``since`` (a ``ts`` bound).

    Time buckets are hours for a period of up to two days, days beyond. Each chart is
    folded by the store (the top callers, purposes and refused routes ranked there), so
    what is read stays small however many distinct values the period holds (a purpose
    is what a refused client declared: a flood of them is a new key each).

    Args:
        store: The audit store.
        since: The period's start, a ``ts`` bound (``parse_when``).
        policy: Names the transfer safeguards (None: ``unknown``).
        now: The moment the period is measured to (for the bucket width).
        summary: Read whole hours from the hourly summary (else every event).
    """
    now = now or datetime.now(UTC)
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    width = 13 if now - start <= timedelta(days=2) else 10
    source, params = _source(since, width, summary=summary)
    g = f"({source}) g"
    order = _BYTES["sqlite" if store.url.startswith("sqlite:") else "postgresql"]
    over_time: Counter[tuple[str, str]] = Counter()
    for bucket, reason, n in store.rows(
            f"SELECT b, reason, sum(n) FROM {g} GROUP BY b, reason", params):  # noqa: S608
        over_time[(str(bucket), str(reason))] += int(n)
    transfers: Counter[tuple[str, str]] = Counter()
    for country, caller, n in store.rows(
            f"SELECT country, caller, sum(n) FROM {g} WHERE allowed = 1 AND country <> '' "  # noqa: S608
            "AND country <> ? GROUP BY country, caller", [*params, HOME_COUNTRY]):
        transfers[(str(country), safeguard(policy, str(caller)))] += int(n)
    routes = store.rows(
        f"SELECT k, sum(n) AS total FROM (SELECT CASE WHEN route = '' THEN ? ELSE route END "  # noqa: S608
        f"AS k, n FROM {g} WHERE allowed <> 1) r GROUP BY k ORDER BY total DESC, "
        f"{order.format('k')} LIMIT {TOP}", [NOT_HTTP, *params])
    buckets = sorted({b for b, _ in over_time})
    reasons = sorted({r for _, r in over_time}, key=lambda r: (r != "allowed", r))
    countries = sorted({c for c, _ in transfers})
    return {
        "since": since,
        "over_time": {"labels": buckets,
                      "series": {r: [over_time[(b, r)] for b in buckets] for r in reasons}},
        "callers": _top(store, g, params, "caller", order),
        "purposes": _top(store, g, params, "purpose", order),
        "transfers": {"countries": countries,
                      "series": {s: [transfers[(c, s)] for c in countries]
                                 for s in sorted({s for _, s in transfers})}},
        "denied_routes": [{"key": str(k), "denied": int(n)} for k, n in routes],
    }


_BYTES = {"sqlite": "CAST({} AS BLOB)", "postgresql": "convert_to({}, 'UTF8')"}
"""A text column compared byte by byte (UTF-8: as Python compares the strings), by store."""


def _top(store: Store, g: str, params: list[Any], column: str, order: str
         ) -> list[dict[str, Any]]:
    """The :data:`TOP` keys of ``column`` by decisions (ties by key), with their refusals."""
    rows = store.rows(
        f"SELECT {column}, sum(n) AS total, sum(CASE WHEN allowed = 1 THEN 0 ELSE n END) "  # noqa: S608
        f"FROM {g} GROUP BY {column} ORDER BY total DESC, {order.format(column)} LIMIT {TOP}",
        params)
    return [{"key": str(k), "total": int(n), "denied": int(d)} for k, n, d in rows]


_RAW = ("SELECT substr(e.ts, 1, {width}) AS b, e.reason AS reason, e.caller AS caller, "
        "e.purpose AS purpose, coalesce(e.country, '') AS country, "
        "coalesce(e.http_route, '') AS route, coalesce(e.allowed, -1) AS allowed, "
        "count(*) AS n FROM audit_event e WHERE e.kind = 'decision' AND e.ts >= ?")
_HOURS = ("SELECT substr(hour, 1, {width}) AS b, reason, caller, purpose, country, "
          "http_route AS route, allowed, sum(decisions) AS n FROM audit_hour WHERE hour >= ?")
_BY = " GROUP BY 1, 2, 3, 4, 5, 6, 7"


def _source(since: str, width: int, *, summary: bool) -> tuple[str, list[Any]]:
    """The period's decisions counted by (bucket, reason, caller, purpose, country, route,
    allowed) as SQL to read from (columns ``b ... allowed, n``; several rows per key) and
    its parameters: whole hours from the summary, the rest from the raw events."""
    raw = _RAW.format(width=int(width))
    if not summary:
        return raw + _BY, [since]
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    hour = start.replace(minute=0, second=0, microsecond=0)
    try:
        first_whole = (hour if hour == start else hour + timedelta(hours=1)).strftime(TS_FORMAT)
    except OverflowError:  # the calendar's last hour: nothing after it
        return raw + _BY, [since]
    hours = _HOURS.format(width=int(width)) + _BY
    if since < first_whole:
        return f"{raw} AND e.ts < ?{_BY} UNION ALL {hours}", [since, first_whole,
                                                             first_whole[:13]]
    return hours, [first_whole[:13]]
