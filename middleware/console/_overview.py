"""The overview's chart data: one grouped scan of the period, folded into every chart."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from guard.audit import Store
from guard.policy._compiled import CompiledPolicy
from middleware.console._subject import HOME_COUNTRY, safeguard

TOP = 10
NOT_HTTP = "(not HTTP)"


def overview_data(store: Store, since: str, policy: CompiledPolicy | None, *,
                  now: datetime | None = None) -> dict[str, Any]:
    """Every chart's series for decisions at or after ``since`` (a ``ts`` bound).

    Time buckets are hours for a period of up to two days, days beyond. The store
    groups the period's decisions once, by every dimension a chart needs.
    """
    now = now or datetime.now(UTC)
    start = datetime.fromisoformat(since.replace("Z", "+00:00"))
    width = 13 if now - start <= timedelta(days=2) else 10
    grouped = store.rows(
        f"SELECT substr(e.ts, 1, {width}), e.reason, e.caller, e.purpose, e.country, "  # noqa: S608 - constant SQL
        "e.http_route, e.allowed, count(*) FROM audit_event e "
        "WHERE e.kind = 'decision' AND e.ts >= ? "
        "GROUP BY 1, e.reason, e.caller, e.purpose, e.country, e.http_route, e.allowed",
        [since])
    over_time: Counter[tuple[str, str]] = Counter()
    callers: Counter[str] = Counter()
    callers_denied: Counter[str] = Counter()
    purposes: Counter[str] = Counter()
    purposes_denied: Counter[str] = Counter()
    transfers: Counter[tuple[str, str]] = Counter()
    routes: Counter[str] = Counter()
    for bucket, reason, caller, purpose, country, route, allowed, n in grouped:
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


def _most(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]


def _top(totals: Counter[str], denied: Counter[str]) -> list[dict[str, Any]]:
    return [{"key": k, "total": n, "denied": denied[k]} for k, n in _most(totals)]
