"""SQLite's index keeps the hourly summary exactly what SQL counts over the stored events.

Batches of decisions whose key values are of any JSON type (text, numbers that SQL
stores as text, booleans, nulls), some rows sent twice, indexed into a real store:
``audit_hour`` holds what the summary's SQL counts over the stored events
(``RAW_KEY``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import EventKind, Store, open_store
from guard.audit._event import FIELD_NAMES
from guard.audit._summary import KEY_COLUMNS, RAW_KEY
from tests.guard.audit.conftest import make_event, row_of

AT = {name: FIELD_NAMES.index(name) for name in FIELD_NAMES}
odd = st.sampled_from((1, 1.0, 1.5, True, False, 0, "1", "1.0", "", "a", "A", "é"))
key_values = st.fixed_dictionaries({
    "kind": st.sampled_from(("decision", "decision", "outcome")),
    "ts": st.sampled_from(("2026-03-01T10:00:00.000001Z", "2026-03-01T11:59:59Z",
                           "2026-03-01T10", "", 20260301, 2026.5)),
    "reason": odd, "caller": odd, "purpose": odd,
    "country": st.none() | odd, "http_route": st.none() | odd,
    "allowed": st.sampled_from((None, 0, 1, True, 2.0, "1", "x")),
})


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path_factory.mktemp('hours') / 'audit.db'}")
    yield opened
    opened.close()


def _record(values: dict[str, Any], seq: int) -> bytes:
    row = list(row_of(make_event(EventKind.DECISION, writer_id="w", seq=seq)))
    for name, value in values.items():
        row[AT[name]] = value
    return orjson.dumps(row)


def _counted_by_sql(store: Store) -> list[tuple[Any, ...]]:
    return sorted(store.rows(
        f"SELECT {RAW_KEY}, count(*) FROM audit_event e WHERE e.kind = 'decision' "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7"), key=repr)


def _summary(store: Store) -> list[tuple[Any, ...]]:
    return sorted(store.rows(f"SELECT {', '.join(KEY_COLUMNS)}, decisions FROM audit_hour"),
                  key=repr)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(key_values, min_size=1, max_size=10), min_size=1, max_size=4),
       st.integers(0, 3))
def test_the_summary_is_what_sql_counts_over_the_stored_events(
        store: Store, batches: list[list[dict[str, Any]]], again: int) -> None:
    for table in ("audit_event", "audit_hour"):
        store._conn.execute(f"DELETE FROM {table}")  # type: ignore[attr-defined]
    seq = 0
    sent: list[bytes] = []
    for number, batch in enumerate(batches):
        records = []
        for values in batch:
            seq += 1
            records.append(_record(values, seq))
        sent += records
        store.index_records(records + sent[:again], "journal-t", number)  # some sent again
    assert _summary(store) == _counted_by_sql(store)
