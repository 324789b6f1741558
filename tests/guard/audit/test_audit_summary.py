"""The hourly decision summary: exact against the raw events, on SQLite and PostgreSQL.

Random event sets go in through every insert path (``write``, ``index``, the
trail), in random batches with re-sent and repeated event ids; the summary must
equal the raw events grouped the same way, and the console's chart data read
from it must equal the chart data read from the raw events, for random windows.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import Store, open_store
from guard.audit._event import FIELD_NAMES, TS_FORMAT
from guard.audit._fields import compact
from guard.audit._summary import KEY_COLUMNS, RAW_KEY
from middleware.console._overview import overview_data
from tests.guard.audit.conftest import Keys, decision_event, make_trail, record, seed

BASE = datetime(2026, 3, 1, tzinfo=UTC)
KINDS = ("decision", "decision", "decision", "outcome", "policy_loaded")
SUMMARY_SQL = (f"SELECT {', '.join(KEY_COLUMNS)}, decisions FROM audit_hour "
               f"ORDER BY {', '.join(KEY_COLUMNS)}")
RAW_SQL = (f"SELECT {RAW_KEY}, count(*) FROM audit_event e WHERE e.kind = 'decision' "
           "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7")


def _row(number: int, kind: str, at: datetime, reason: str, caller: str, purpose: str,
         country: str | None, route: str | None, allowed: int | None,
         status: int | None) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "event_id": f"{number:08x}-0000-7000-8000-{number:012x}", "kind": kind,
        "ts": at.strftime(TS_FORMAT), "caller": caller, "party_type": "internal",
        "country": country, "purpose": purpose, "categories": '["contact"]', "action": "read",
        "allowed": allowed, "reason": reason, "rule": "[]", "lawful_basis": "[]",
        "policy_version": "sha256:t", "http_route": route, "http_status": status,
        "writer_id": "w", "seq": number, "prev_hash": "", "hash": ""}
    return tuple(values.get(name) for name in FIELD_NAMES)


events = st.lists(st.tuples(
    st.integers(0, 4 * 24 * 3600 * 1_000_000 - 1),  # microseconds into four days
    st.sampled_from(KINDS), st.sampled_from(("allowed", "category_not_granted", "no_rule")),
    st.sampled_from(("svc:a", "svc:b", "grp:c")), st.sampled_from(("p", "p.q")),
    st.sampled_from((None, "GB", "US", "IN")), st.sampled_from((None, "/a", "/b/{id}")),
    st.sampled_from((0, 1, None)), st.sampled_from((None, 200, 403))), max_size=60)
# How the rows go in: batch sizes, and ids sent twice.
plans = st.tuples(st.lists(st.integers(1, 25), min_size=1, max_size=8),
                  st.lists(st.integers(0, 59), max_size=6))
windows = st.tuples(st.integers(-3600 * 1_000_000, 4 * 24 * 3600 * 1_000_000),
                    st.sampled_from((0, 1, 60)), st.sampled_from((1, 3)))


def _wipe(url: str) -> None:
    sql = ("DELETE FROM audit_event", "DELETE FROM audit_hour")
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in sql:
                conn.execute(statement)
    else:
        with psycopg.connect(url) as conn:
            for statement in sql:
                conn.execute(statement)


def _load(store: Store, picked: list[tuple[Any, ...]],
          plan: tuple[list[int], list[int]]) -> None:
    rows = [_row(i, kind, BASE + timedelta(microseconds=us), *rest)
            for i, (us, kind, *rest) in enumerate(picked)]
    sizes, again = plan
    offset = start = 0
    turn = 0
    while start < len(rows):
        size = sizes[turn % len(sizes)]
        batch = rows[start:start + size]
        # Every other batch: re-send rows already stored, and repeat one inside the batch
        # (SQLite counts a batch stored whole from its records, else from its rows).
        if turn % 2:
            batch += [rows[i] for i in again if i < start] + batch[:1]
        offset += len(batch)  # as the indexer hands over journal records
        store.index_records([compact(row) for row in batch], "journal-t", offset)
        start += size
        turn += 1


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picked=events, plan=plans, window=windows)
def test_summary_and_charts_equal_the_raw_events(
        store: Store, store_url: str, picked: list[tuple[Any, ...]],
        plan: tuple[list[int], list[int]], window: tuple[int, int, int]) -> None:
    _wipe(store_url)
    _load(store, picked, plan)
    assert store.rows(SUMMARY_SQL) == store.rows(RAW_SQL)
    offset, rounding, days = window
    since = BASE + timedelta(microseconds=offset)
    if rounding:  # on a whole minute or a whole hour: the edge query's bounds
        since = since.replace(microsecond=0, second=0,
                              minute=0 if rounding == 60 else since.minute)
    now = since + timedelta(days=days)
    bound = since.strftime(TS_FORMAT)
    from_summary = overview_data(store, bound, None, now=now)
    from_raw = overview_data(store, bound, None, now=now, summary=False)
    assert from_summary == from_raw


@pytest.mark.parametrize(("odd", "stored"), [
    ({"ts": 20260301}, True), ({"ts": 2.5}, True), ({"country": 0}, True),
    ({"allowed": True}, True), ({"http_route": 7}, True), ({"reason": None}, False),
])
def test_a_record_of_odd_values_is_counted_as_its_row_is(
        tmp_path: Path, odd: dict[str, Any], stored: bool) -> None:
    """SQLite: a record not written by the guard (a number for a timestamp or a route) is
    stored as the journal holds it and the summary counts the row stored (in SQL, where
    Python could not); one a column refuses (a null reason) is refused with its batch."""
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    good = _row(1, "decision", BASE, "allowed", "svc:a", "p", "GB", "/a", 1, 200)
    values = dict(zip(FIELD_NAMES, _row(2, "decision", BASE, "allowed", "svc:a", "p", None,
                                        None, 0, 200), strict=True))
    odd_row = tuple({**values, **odd}[name] for name in FIELD_NAMES)
    if stored:
        store.index_records([compact(good), compact(odd_row)], "journal-t", 2)
    else:
        with pytest.raises(AuditUnavailableError):
            store.index_records([compact(good), compact(odd_row)], "journal-t", 2)
    assert store.rows("SELECT count(*) FROM audit_event") == [(2 if stored else 0,)]
    assert store.rows(SUMMARY_SQL) == store.rows(RAW_SQL)
    store.close()


def test_the_trail_keeps_the_summary(store_url: str, keys: Keys) -> None:
    trail = make_trail(store_url, keys)
    for n in range(30):
        record(trail, decision_event(allowed=n % 3 != 0, caller=f"svc:{n % 4}"))
    trail.close()
    reader = open_store(store_url, create=False)
    try:
        summary = reader.rows(SUMMARY_SQL)
        assert summary == reader.rows(RAW_SQL)
        assert sum(int(r[-1]) for r in summary) == 30
    finally:
        reader.close()


def test_the_migration_fills_the_summary_from_stored_events(store_url: str) -> None:
    store = open_store(store_url)
    store.rows("SELECT 1")
    rows = [_row(i, KINDS[i % 5], BASE + timedelta(minutes=7 * i), "allowed", "svc:a", "p",
                 "US" if i % 2 else None, "/a", i % 2, None) for i in range(50)]
    seed(store, rows)
    store.close()
    # The store as it was before the summary: no table, schema version 4.
    older = ("DROP TABLE audit_hour", "DELETE FROM schema_version WHERE version >= 5")
    if store_url.startswith("sqlite:///"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            for statement in older:
                conn.execute(statement)
    else:
        with psycopg.connect(store_url) as conn:
            for statement in older:
                conn.execute(statement)
    reopened = open_store(store_url)
    try:
        reopened.rows("SELECT 1")
        summary = reopened.rows(SUMMARY_SQL)
        assert summary == reopened.rows(RAW_SQL)
        assert sum(int(r[-1]) for r in summary) == sum(1 for r in rows if r[1] == "decision")
    finally:
        reopened.close()


def test_a_store_from_before_the_summary_is_migrated_by_its_reader_and_charted(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    seed(store, [_row(i, "decision", BASE + timedelta(minutes=20 * i), "allowed", "svc:a", "p",
                      "US", "/a", 1, None) for i in range(12)])
    store.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP TABLE audit_hour")
        conn.execute("DELETE FROM schema_version WHERE version >= 5")
    reader = open_store(url, create=False)
    try:
        data = overview_data(reader, BASE.strftime(TS_FORMAT), None,
                             now=BASE + timedelta(hours=5))
    finally:
        reader.close()
    assert sum(sum(v) for v in data["over_time"]["series"].values()) == 12


BATCHES = 30


def test_concurrent_writers_keep_the_summary_exact(store_url: str) -> None:
    """Two stores (two replicas) indexing decisions of the same hours at once: exact, and
    no deadlock (each batch adds to the summary rows in one order, the key's)."""
    stores = [open_store(store_url) for _ in range(2)]
    errors: list[BaseException] = []

    def replica(number: int) -> None:
        rng = random.Random(number)
        try:
            for batch in range(BATCHES):
                rows = [_row(number * 100_000 + batch * 1000 + i, "decision",
                             BASE + timedelta(minutes=rng.randrange(360)),
                             rng.choice(("allowed", "no_rule")),
                             rng.choice(("svc:a", "svc:b", "svc:c", "svc:d")),
                             "p", rng.choice((None, "US")), "/a", rng.choice((0, 1)), 200)
                        for i in range(100)]
                stores[number].index_records([compact(row) for row in rows],
                                             f"journal-{number}", batch + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert not errors
        summary = stores[0].rows(SUMMARY_SQL)
        assert summary == stores[0].rows(RAW_SQL)
        assert sum(int(r[-1]) for r in summary) == 2 * BATCHES * 100
    finally:
        for store in stores:
            store.close()
