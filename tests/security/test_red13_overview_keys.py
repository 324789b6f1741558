"""Thirteenth review: the console's overview reads a bounded amount whatever the trail holds.

The overview's charts rank the top callers, purposes and refused routes of a period. It
read every (hour, reason, caller, purpose, country, route, outcome) group of the period
into the console's memory and ranked them there; a purpose is what a client declared,
and each refused request with a new one is a new group: clients with no credentials
record 600 such refusals a minute one by one (the refusal budget), 864,000 groups a day,
so the overview of a month held some 26 million rows (gigabytes) in the console, or in
the sidecar that mounts it, when an auditor opened it. Each chart is now folded and
ranked by the store, and what the console reads is bounded by the number of buckets,
reasons and the top ten.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import Store, open_store
from guard.audit._event import TS_FORMAT
from guard.audit._fields import compact
from guard.audit._summary import RAW_DIMENSIONS
from middleware.console._overview import NOT_HTTP, TOP, overview_data
from middleware.console._subject import HOME_COUNTRY, safeguard
from tests.guard.audit.test_audit_summary import BASE, _row, _wipe

NOW = BASE + timedelta(days=3)


def _flood(store: Store, count: int, first: int = 0) -> None:
    """``count`` refused requests, each declaring a purpose of its own, over two days."""
    rows = [_row(first + i, "decision", BASE + timedelta(seconds=17 * i), "unauthenticated",
                 "", f"made.up.{i:06d}." + "x" * 150, None, "/customers/{id}", 0, 401)
            for i in range(count)]
    for start in range(0, count, 500):
        store.index_records([compact(r) for r in rows[start:start + 500]], "journal-f",
                            first + start + len(rows[start:start + 500]))


def _peak(store: Store) -> int:
    tracemalloc.start()
    try:
        overview_data(store, BASE.strftime(TS_FORMAT), None, now=NOW)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_overview_of_a_flood_of_purposes_reads_a_bounded_amount(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        _flood(store, 2_000)
        small = _peak(store)
        _flood(store, 8_000, first=2_000)
        large = _peak(store)
    finally:
        store.close()
    # Before: the peak grew with the groups read (5 times the purposes: about 4.6 times).
    assert large < 1.5 * small, (small, large)


def _reference(store: Store, since: str, width: int) -> dict[str, Any]:
    """The charts as the console computed them before: every group read, folded here."""
    rows = store.rows(
        f"SELECT substr(e.ts, 1, {width}), {RAW_DIMENSIONS}, count(*) FROM audit_event e "
        "WHERE e.kind = 'decision' AND e.ts >= ? GROUP BY 1, 2, 3, 4, 5, 6, 7", [since])
    over_time: Counter[tuple[str, str]] = Counter()
    totals: dict[str, Counter[str]] = {"caller": Counter(), "purpose": Counter()}
    denied: dict[str, Counter[str]] = {"caller": Counter(), "purpose": Counter()}
    transfers: Counter[tuple[str, str]] = Counter()
    routes: Counter[str] = Counter()
    for bucket, reason, caller, purpose, country, route, allowed, n in rows:
        over_time[(str(bucket), str(reason))] += n
        totals["caller"][caller] += n
        totals["purpose"][purpose] += n
        if allowed == 1:
            if country and country != HOME_COUNTRY:
                transfers[(country, safeguard(None, caller))] += n
        else:
            denied["caller"][caller] += n
            denied["purpose"][purpose] += n
            routes[route or NOT_HTTP] += n

    def most(counts: Counter[str]) -> list[tuple[str, int]]:
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]

    buckets = sorted({b for b, _ in over_time})
    reasons = sorted({r for _, r in over_time}, key=lambda r: (r != "allowed", r))
    countries = sorted({c for c, _ in transfers})
    return {
        "since": since,
        "over_time": {"labels": buckets,
                      "series": {r: [over_time[(b, r)] for b in buckets] for r in reasons}},
        **{f"{k}s": [{"key": key, "total": n, "denied": denied[k][key]}
                     for key, n in most(totals[k])] for k in ("caller", "purpose")},
        "transfers": {"countries": countries,
                      "series": {s: [transfers[(c, s)] for c in countries]
                                 for s in sorted({s for _, s in transfers})}},
        "denied_routes": [{"key": k, "denied": n} for k, n in most(routes)],
    }


KEYS = ("a", "b", "B", "z", "é", "ä.x", "p", "p.q", "Ω", "svc:a", "svc:b", "grp:c", "0", "~")
picked = st.lists(st.tuples(
    st.integers(0, 2 * 24 * 3600 * 1_000_000 - 1),
    st.sampled_from(("allowed", "category_not_granted", "unauthenticated")),
    st.sampled_from(KEYS), st.sampled_from(KEYS), st.sampled_from((None, "GB", "US", "IN")),
    st.sampled_from((None, "/a", "/b/{id}")), st.sampled_from((0, 1, None))), max_size=80)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=picked, offset=st.integers(0, 2 * 24 * 3600 * 1_000_000),
       days=st.sampled_from((1, 3)))
def test_the_charts_are_those_of_every_group_folded(
        store: Store, store_url: str, events: list[tuple[Any, ...]], offset: int,
        days: int) -> None:
    _wipe(store_url)
    rows = [_row(i, "decision", BASE + timedelta(microseconds=us), reason, caller, purpose,
                 country, route, allowed, 200)
            for i, (us, reason, caller, purpose, country, route, allowed) in enumerate(events)]
    if rows:
        store.index_records([compact(r) for r in rows], "journal-t", len(rows))
    since = BASE + timedelta(microseconds=offset)
    now: datetime = since + timedelta(days=days)
    bound = since.strftime(TS_FORMAT)
    expected = _reference(store, bound, 13 if days == 1 else 10)
    assert overview_data(store, bound, None, now=now) == expected
    assert overview_data(store, bound, None, now=now, summary=False) == expected
