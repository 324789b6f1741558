"""The index child's main thread (normal policy) wakes only when a lane could need relief.

Every wake-up of a thread of normal policy may take a CPU from the service's
event loop or journal writer; the child's main thread looked at its lanes every
0.1 s. It now sleeps until the earliest moment a lane's idle indexer could be
behind by ``_IDLE_LAG`` (or the folder's next look for lanes, each second).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guard.audit import EventKind, load_signing_key
from guard.audit._fields import ChainKey
from guard.audit._follow import _IDLE_LAG, _STATUS_EVERY, _next_look
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal
from guard.audit._jwriter import JournalWriter
from guard.audit._sqlite import SqliteStore
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys
from tests.guard.audit.test_audit_index_child import FIELDS, policies, until


def test_the_main_thread_sleeps_until_relief_could_be_due_or_the_next_look_for_lanes() -> None:
    now = 1000.0
    assert _next_look(now, due=now + 0.4, looked=now) == pytest.approx(0.4)  # a lane: relief's time
    assert _next_look(now, due=float("inf"), looked=now - 0.25) == pytest.approx(0.75)  # lanes: 1/s
    assert _next_look(now, due=now - 5.0, looked=now) == _STATUS_EVERY  # due: soon, not a spin
    assert _next_look(now, due=now + 0.01, looked=now) == _STATUS_EVERY


def writer(journal: Journal, keys: Keys) -> JournalWriter:
    return JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                         writer_id="test", chain_key=ChainKey(CHAIN_KEY))


def test_relief_is_due_idle_seconds_after_the_oldest_wait_or_after_now_when_none_waits(
    keys: Keys, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "audit.db")
    journal = Journal(tmp_path / "j")
    indexer = Indexer(journal.folder, store, interval=3600, idle=_IDLE_LAG)  # no timer here
    w = writer(journal, keys)
    try:
        w.results(EventKind.DECISION, [FIELDS])
        assert indexer.wait(journal.next_offset, timeout=30)  # caught up: nothing waits
        # Under the lock the indexer's thread paces under: looking while nothing waits, it
        # sets the pace's time to its own now (every 0.1 s) and would move the one set here.
        with indexer._cond:
            now = time.monotonic()
            indexer._pace.since = now - 10.0  # as a starved idle thread leaves it
            # nothing waits: a record durable from now on may wait _IDLE_LAG seconds
            assert indexer.relief_due(now) == pytest.approx(now + _IDLE_LAG)
            w.results(EventKind.DECISION, [FIELDS])  # one waits (the pace's timer: an hour)
            assert indexer.relief_due(now) == pytest.approx(now - 10.0 + _IDLE_LAG)  # overdue
        not_idle = Indexer(journal.folder, store, interval=3600)
        try:
            assert not_idle.relief_due(now) == float("inf")
        finally:
            not_idle.close(catch_up=False)
    finally:
        w.close()
        indexer.close()
        journal.close()
        store.close()


COUNTED = """
import sys, time
from guard.audit import _follow
next_look = _follow._next_look
def counted(now, due, looked):  # once a look of the main thread, then it sleeps
    print("look", time.monotonic(), flush=True)
    return next_look(now, due, looked)
_follow._next_look = counted
sys.exit(_follow.main(sys.argv[1:]))
"""
"""The child (``python -m guard.audit._follow``) saying when its main thread looks: each
look is one wake-up (its voluntary context switches also count its waits for the
interpreter lock, which a starved ``SCHED_IDLE`` thread may hold on a loaded machine)."""


def test_an_idle_childs_main_thread_wakes_a_few_times_a_second_not_ten(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal" / "lane-0")
    w = writer(journal, keys)
    w.results(EventKind.DECISION, [FIELDS])
    w.close()
    journal.close()
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    child = subprocess.Popen([sys.executable, "-P", "-c", COUNTED, str(tmp_path / "journal"), url],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        # caught up: the lane's indexer goes idle
        until(lambda: os.SCHED_IDLE in policies(child.pid).values())
        start = time.monotonic()
        time.sleep(3.0)
        end = time.monotonic()
    finally:
        out, _ = child.communicate(timeout=60)  # its standard input ends: it stops
    looks = [float(line.split()[1]) for line in out.splitlines() if line.startswith("look ")]
    woke = sum(1 for at in looks if start <= at < end)
    # every 0.1 s: 30; until relief could be due (0.4 s after the idle thread's last
    # look) or the next look for lanes: about 8 (a loaded machine only makes it fewer)
    assert woke <= 15, woke
