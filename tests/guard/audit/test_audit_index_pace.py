"""The indexer's pace, on a controlled clock: the lag it aims at, and larger transactions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.audit._indexer import Pace


def simulate(interval: float, took: float, arrivals: list[float], batch: int = 10**9
             ) -> tuple[list[float], list[int]]:
    """An indexer on a clock it controls: looks when the pace says, indexes what waits.

    A transaction reads everything durable (up to ``batch``) and commits ``took``
    seconds after its read. Returns each record's lag (durable -> committed) and the
    size of each transaction.
    """
    pace = Pace(interval, batch, 0.0)
    pace.done(took)  # as long as the transactions before
    now, done, lags, sizes = 0.0, 0, [], []
    while done < len(arrivals):
        durable = sum(1 for t in arrivals if t <= now)
        sleep = pace.wait(now, durable - done)
        if sleep > 0:
            now += sleep
            continue
        take = min(batch, durable - done)
        pace.read(now, take == durable - done)
        now += took
        lags += [now - t for t in arrivals[done:done + take]]
        sizes.append(take)
        done += take
        pace.done(took)
    return lags, sizes


gaps = st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=60)


@given(gaps, st.floats(min_value=0.05, max_value=1.0), st.floats(min_value=0.0, max_value=1.0))
def test_no_record_waits_longer_than_the_interval_while_transactions_are_short(
    steps: list[float], interval: float, share: float
) -> None:
    took = interval * share  # each transaction takes as long as the one before
    arrivals = [sum(steps[:i + 1]) for i in range(len(steps))]
    lags, _ = simulate(interval, took, arrivals)
    if took <= interval / 2:  # the current transaction and the next fit in the interval
        assert max(lags) <= interval + 1e-9
    poll = Pace(interval, 1, 0.0).poll  # a look finds a record at most this late
    assert max(lags) <= max(interval, 2 * took + poll) + 1e-9


@given(gaps, st.floats(min_value=0.05, max_value=1.0), st.integers(min_value=1, max_value=20))
def test_a_transaction_never_holds_more_than_batch_records(
    steps: list[float], interval: float, batch: int
) -> None:
    arrivals = [sum(steps[:i + 1]) for i in range(len(steps))]
    _, sizes = simulate(interval, interval / 10, arrivals, batch)
    assert max(sizes) <= batch
    assert sum(sizes) == len(arrivals)


def test_a_steady_low_rate_is_indexed_in_transactions_of_an_interval_of_records() -> None:
    arrivals = [i / 3000 for i in range(1, 9001)]  # 3,000 events/s for 3 s
    lags, sizes = simulate(0.5, 0.05, arrivals)
    assert min(sizes[:-1]) >= 1300  # 0.45 s of records (the interval less the transaction)
    assert max(lags) <= 0.5 + 1e-9


def test_a_full_batch_starts_at_once_and_nothing_waiting_means_a_look_later() -> None:
    pace = Pace(0.5, 100, 0.0)
    assert pace.wait(0.01, 100) == 0.0
    assert pace.wait(0.01, 0) == pace.poll == 0.1
    assert 0 < pace.wait(0.02, 1) <= pace.poll  # waits since the look that saw none: 0.01
    assert pace.wait(0.51, 1) == 0.0


def test_the_wait_shrinks_by_the_longest_of_the_last_transactions() -> None:
    pace = Pace(0.4, 10**9, 0.0)
    for took in (0.01, 0.3, 0.02):
        pace.done(took)
    assert pace.took == 0.3
    assert pace.wait(0.05, 1) == pytest.approx(0.05)  # due at 0.4 - 0.3 (before a poll)
    assert pace.wait(0.11, 1) == 0.0
    for _ in range(7):
        pace.done(0.01)  # the slow one is out of the last 8
    assert pace.took == 0.02
