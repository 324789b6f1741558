"""The overview's chart data: grouped counts, computed in the store."""

from __future__ import annotations

from typing import Any

from guard.audit import Store
from guard.policy._compiled import CompiledPolicy
from middleware.console._subject import HOME_COUNTRY, safeguard

TOP = 10


def _grouped(store: Store, select: str, since: str, *, extra: str = "", tail: str = "",
             params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    sql = (f"SELECT {select} FROM audit_event e WHERE e.kind = 'decision' "  # noqa: S608 - constant SQL
           f"AND e.ts >= ? {extra} {tail}")
    return store.rows(sql, [since, *params])


def overview_data(store: Store, since: str, policy: CompiledPolicy | None) -> dict[str, Any]:
    """Every chart's series for decisions at or after ``since`` (a ``ts`` bound).

    Time buckets are hours when ``since`` is within two days of the newest event,
    days otherwise.
    """
    span = store.rows("SELECT min(ts), max(ts) FROM audit_event e "
                      "WHERE e.kind = 'decision' AND e.ts >= ?", [since])
    first, last = span[0] if span else (None, None)
    width = 13 if first and last and str(last)[:10] <= _two_days_after(str(first)) else 10
    bucket = f"substr(e.ts, 1, {width})"
    over_time = _grouped(store, f"{bucket}, e.reason, count(*)", since,
                         tail=f"GROUP BY {bucket}, e.reason ORDER BY 1")
    buckets = sorted({str(r[0]) for r in over_time})
    reasons = sorted({str(r[1]) for r in over_time}, key=lambda r: (r != "allowed", r))
    series = {reason: [0] * len(buckets) for reason in reasons}
    index = {b: i for i, b in enumerate(buckets)}
    for b, reason, n in over_time:
        series[str(reason)][index[str(b)]] = int(n)
    denied_sum = "sum(CASE WHEN e.allowed = 0 THEN 1 ELSE 0 END)"
    callers = _grouped(store, f"e.caller, count(*), {denied_sum}", since,
                       tail=f"GROUP BY e.caller ORDER BY 2 DESC, 1 LIMIT {TOP}")
    purposes = _grouped(store, f"e.purpose, count(*), {denied_sum}", since,
                        tail=f"GROUP BY e.purpose ORDER BY 2 DESC, 1 LIMIT {TOP}")
    transfers = _grouped(store, "e.country, e.caller, count(*)", since,
                         extra="AND e.allowed = 1 AND e.country IS NOT NULL AND e.country <> ?",
                         tail="GROUP BY e.country, e.caller", params=(HOME_COUNTRY,))
    routes = _grouped(store, "coalesce(e.http_route, '(not HTTP)'), count(*)", since,
                      extra="AND e.allowed = 0",
                      tail=f"GROUP BY coalesce(e.http_route, '(not HTTP)') "
                           f"ORDER BY 2 DESC, 1 LIMIT {TOP}")
    return {
        "since": since,
        "over_time": {"labels": buckets, "series": series},
        "callers": [{"key": r[0], "total": int(r[1]), "denied": int(r[2] or 0)} for r in callers],
        "purposes": [{"key": r[0], "total": int(r[1]), "denied": int(r[2] or 0)}
                     for r in purposes],
        "transfers": _transfers(transfers, policy),
        "denied_routes": [{"key": r[0], "denied": int(r[1])} for r in routes],
    }


def _two_days_after(ts: str) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(ts[:10]) + timedelta(days=2)).isoformat()


def _transfers(rows: list[tuple[Any, ...]], policy: CompiledPolicy | None) -> dict[str, Any]:
    """Allowed decisions for recipients abroad: countries x safeguards."""
    counts: dict[tuple[str, str], int] = {}
    for country, caller, n in rows:
        key = (str(country), safeguard(policy, str(caller)))
        counts[key] = counts.get(key, 0) + int(n)
    countries = sorted({c for c, _ in counts})
    safeguards = sorted({s for _, s in counts})
    return {"countries": countries,
            "series": {s: [counts.get((c, s), 0) for c in countries] for s in safeguards}}

