"""The overview's chart data: the period's decisions grouped once, folded into every chart.

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
from guard.audit._summary import RAW_DIMENSIONS
from guard.policy._compiled import CompiledPolicy
from middleware.console._subject import HOME_COUNTRY, safeguard

TOP = 10
NOT_HTTP = "(not HTTP)"


def overview_data(store: Store, since: str, policy: CompiledPolicy | None, *,
                  now: datetime | None = None, summary: bool = True) -> dict[str, Any]:
    """Every chart's series for decisions at or after ``since`` (a ``ts`` bound).

    Time buckets are hours for a period of up to two days, days beyond.

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
    over_time: Counter[tuple[str, str]] = Counter()
    callers: Counter[str] = Counter()
    callers_denied: Counter[str] = Counter()
    purposes: Counter[str] = Counter()
    purposes_denied: Counter[str] = Counter()
    transfers: Counter[tuple[str, str]] = Counter()
    routes: Counter[str] = Counter()
    for bucket, reason, caller, purpose, country, route, allowed, n in grouped(
            store, since, width, summary=summary):
        count = int(n)
        over_time[(str(bucket), str(reason))] += count
        callers[str(caller)] += count
        purposes[str(purpose)] += count
        if allowed == 1:
            if country and country != HOME_COUNTRY:
                transfers[(str(country), safeguard(policy, str(caller)))] += count
        else:
            callers_denied[str(caller)] += count
            purposes_denied[str(purpose)] += count
            routes[str(route) if route else NOT_HTTP] += count
    buckets = sorted({b for b, _ in over_time})
    reasons = sorted({r for _, r in over_time}, key=lambda r: (r != "allowed", r))
    countries = sorted({c for c, _ in transfers})
    return {
        "since": since,
        "over_time": {"labels": buckets,
                      "series": {r: [over_time[(b, r)] for b in buckets] for r in reasons}},
        "callers": _top(callers, callers_denied),
        "purposes": _top(purposes, purposes_denied),
        "transfers": {"countries": countries,
                      "series": {s: [transfers[(c, s)] for c in countries]
                                 for s in sorted({s for _, s in transfers})}},
        "denied_routes": [{"key": k, "denied": n} for k, n in _most(routes)],
    }


def grouped(store: Store, since: str, width: int, *,
            summary: bool = True) -> list[tuple[Any, ...]]:
    """Decision counts at or after ``since`` by (``ts`` cut to ``width`` characters, reason,
    caller, purpose, country, route, allowed), possibly several rows per key.

    Args:
        store: The audit store.
        since: The period's start, a ``ts`` bound.
        width: 13 for hours, 10 for days.
        summary: Read whole hours from the summary.
    """
    by = " GROUP BY 1, 2, 3, 4, 5, 6, 7"
    raw = (f"SELECT substr(e.ts, 1, {int(width)}), {RAW_DIMENSIONS}, count(*) "  # noqa: S608 - constant SQL
           f"FROM audit_event e WHERE e.kind = 'decision' AND e.ts >= ?")
    if not summary:
        return store.rows(raw + by, [since])
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    hour = start.replace(minute=0, second=0, microsecond=0)
    try:
        first_whole = (hour if hour == start else hour + timedelta(hours=1)).strftime(TS_FORMAT)
    except OverflowError:  # the calendar's last hour: nothing after it
        return store.rows(raw + by, [since])
    edge = (store.rows(f"{raw} AND e.ts < ?{by}", [since, first_whole])
            if since < first_whole else [])
    hours = store.rows(
        f"SELECT substr(hour, 1, {int(width)}), reason, caller, purpose, country, "  # noqa: S608 - constant SQL
        f"http_route, allowed, sum(decisions) FROM audit_hour WHERE hour >= ?{by}",
        [first_whole[:13]])
    return [*edge, *hours]


def _most(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]


def _top(totals: Counter[str], denied: Counter[str]) -> list[dict[str, Any]]:
    return [{"key": k, "total": n, "denied": denied[k]} for k, n in _most(totals)]
