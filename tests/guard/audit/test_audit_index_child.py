"""``audit.index = "auto"``: at SQLite the index is built by a child process of the service.

The child runs the follower of ``guard audit index``; the trail starts it,
starts it again when it dies, stops it on close, and it stops by itself when
the service dies. Killing it while it indexes loses nothing and doubles
nothing; two services on one journal folder share one indexing child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from guard.audit import EventKind, JournalTrail, open_store, wait_indexed
from guard.audit._fields import decode_many
from guard.audit._follow import Follower
from guard.audit._journal import read_journal
from guard.audit._schema import EVENT_COLUMNS
from guard.config import AuditSettings
from tests.guard.audit.conftest import (
    Keys,
    assert_lost_none_doubled_none,
    rows_of,
    trail_settings,
)

FIELDS = {"caller": "svc:crm", "purpose": "p", "categories": ("c",), "allowed": True,
          "reason": "allowed", "subject_id": "cust-1"}


def gone(pid: int) -> bool:
    """The process ended (a zombie left for its parent to reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


def until(check: Any, timeout: float = 30.0) -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def sqlite_settings(tmp_path: Path, keys: Keys, **kwargs: Any) -> AuditSettings:
    return AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}", signing_key=keys.signing,
                         hmac_key=tmp_path / "hmac.key", **kwargs)


def test_auto_is_the_default_and_inline_is_refused_in_one_line_naming_what_to_use(
    tmp_path: Path,
) -> None:
    assert AuditSettings().index == "auto"
    with pytest.raises(ValidationError, match=r'"inline" .* was removed: use "auto"'):
        AuditSettings(index="inline")  # type: ignore[arg-type]
    config = tmp_path / "guard.toml"
    config.write_text('[audit]\nindex = "inline"\n')
    refused = subprocess.run(
        [sys.executable, "-c", "from guard.cli import main; main()", "audit", "index", "--once"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env={**os.environ, "GUARD_CONFIG": str(config)})
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert '"inline" (an index thread in each process) was removed' in refused.stderr
    assert '"external" (guard audit index)' in refused.stderr


def started_no_index_thread(before: set[threading.Thread]) -> bool:
    """No thread started since ``before`` indexes (the child does)."""
    return "audit-indexer" not in {t.name for t in set(threading.enumerate()) - before}


def test_the_child_indexes_flush_waits_for_it_and_close_stops_it(
    keys: Keys, tmp_path: Path
) -> None:
    config = sqlite_settings(tmp_path, keys)
    before = set(threading.enumerate())
    trail = JournalTrail(config)
    assert started_no_index_thread(before)
    assert trail.child is not None
    pid = trail.child.pid
    assert pid != os.getpid()
    for _ in range(30):
        trail.record_fields(EventKind.DECISION, FIELDS)
    trail.flush()
    assert trail.store.rows("SELECT count(*) FROM audit_event") == [(30,)]
    trail.record_fields(EventKind.DECISION, FIELDS)
    wait_indexed(config)  # another reader of this process asks the child too
    assert trail.store.rows("SELECT count(*) FROM audit_event") == [(31,)]
    assert trail.ready() == (True, "audit journal writable")
    trail.close()
    assert gone(pid)
    store = open_store(config.store, create=False)  # the closing checkpoint was indexed
    assert store.rows("SELECT kind FROM audit_checkpoint ORDER BY seq, kind")[-1] == ("close",)
    store.close()


def test_at_postgresql_too_the_child_indexes_and_the_service_runs_no_index_thread(
    pg_url: str, keys: Keys, tmp_path: Path
) -> None:
    config = AuditSettings(store=pg_url, signing_key=keys.signing,
                           hmac_key=tmp_path / "hmac.key", journal=tmp_path / "journal")
    before = set(threading.enumerate())
    trail = JournalTrail(config)
    try:
        assert started_no_index_thread(before)
        assert trail.child is not None
        assert trail.child.pid != os.getpid()
        trail.record_fields(EventKind.DECISION, FIELDS)
        trail.flush()
        assert trail.store.rows("SELECT count(*) FROM audit_event") == [(1,)]
    finally:
        trail.close()


def test_sigkill_of_the_child_while_it_indexes_loses_nothing_and_doubles_nothing(
    store_url: str, keys: Keys, tmp_path: Path
) -> None:
    trail = JournalTrail(trail_settings(store_url, keys, index="auto", checkpoint_every=50,
                                        index_retry_seconds=0.1))  # restarted 0.1 s after
    child = trail.child
    assert child is not None
    acknowledged: list[str] = []
    stop = threading.Event()

    def produce(n: int) -> None:
        i = 0
        while not stop.is_set():
            acknowledged.append(trail.record_fields(
                EventKind.DECISION, {**FIELDS, "subject_id": f"{n}-{i}"}))
            i += 1

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for producer in producers:
        producer.start()
    try:
        for kills in range(1, 3):  # twice, each once the new child has indexed something
            pid, indexed = child.pid, len(acknowledged)
            until(lambda indexed=indexed: len(acknowledged) > indexed + 200)
            os.kill(pid, signal.SIGKILL)
            until(lambda pid=pid: child.pid != pid)
            assert child.restarts == kills
    finally:
        stop.set()
        for producer in producers:
            producer.join()
    trail.flush()  # the last child catches up
    trail.close()
    assert_lost_none_doubled_none(trail.journal.folder, store_url, acknowledged, keys)


def test_the_retry_setting_reaches_the_child_and_its_indexers(keys: Keys, tmp_path: Path) -> None:
    trail = JournalTrail(sqlite_settings(tmp_path, keys, index_retry_seconds=0.25))
    try:
        assert trail.child is not None
        argv = Path(f"/proc/{trail.child.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--retry=0.25" in argv
    finally:
        trail.close()
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    follower = Follower(tmp_path / "audit.db.journal", store, retry=0.25)
    try:
        follower.discover()
        assert [ix._retry for ix in follower.indexers.values()] == [0.25]
    finally:
        follower.close()
        store.close()


SERVICE = r"""
import sys, time
from pathlib import Path
from guard.audit import EventKind, JournalTrail
from guard.config import AuditSettings
from pydantic import ValidationError

trail = JournalTrail(AuditSettings(store=sys.argv[1], signing_key=Path(sys.argv[2]),
                                   hmac_key=Path(sys.argv[3]), journal=Path(sys.argv[4])))
trail.record_fields(EventKind.DECISION, {"caller": "c", "purpose": "p", "categories": ("c",),
                                         "allowed": True, "reason": "allowed"})
print(trail.child.pid, flush=True)
time.sleep(600)
"""


def test_the_child_stops_when_the_service_is_killed(keys: Keys, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE, url, str(keys.signing), str(tmp_path / "hmac.key"),
         str(tmp_path / "journal")],
        stdout=subprocess.PIPE, cwd=tmp_path)
    assert service.stdout is not None
    pid = int(service.stdout.readline())
    store = open_store(url, create=False)
    until(lambda: store.rows("SELECT count(*) FROM audit_event") == [(1,)])  # the child runs
    store.close()
    assert not gone(pid)
    service.kill()
    service.wait(30)
    until(lambda: gone(pid))  # its pipe from the service ended
    trail = JournalTrail(trail_settings(url, keys, journal=tmp_path / "journal", index="auto"))
    trail.flush()  # the next service's child indexes the killed one's lane too
    assert trail.store.rows("SELECT count(*) FROM audit_event WHERE kind = 'decision'") == [(1,)]
    trail.close()


def test_two_services_share_one_indexing_child_and_the_second_takes_over(
    keys: Keys, tmp_path: Path
) -> None:
    config = sqlite_settings(tmp_path, keys)
    first, second = JournalTrail(config), JournalTrail(config)
    assert first.journal.folder != second.journal.folder  # a lane each
    for trail in (first, second):
        trail.record_fields(EventKind.DECISION, FIELDS)
    first.flush()
    second.flush()  # indexed by the one child that holds the folder
    first.close()  # its child stops: the other takes the folder over
    second.record_fields(EventKind.DECISION, FIELDS)
    second.flush()
    assert second.store.rows("SELECT count(*) FROM audit_event WHERE kind = 'decision'") == [(3,)]
    second.close()


word = st.text(min_size=1, max_size=10)
decisions = st.lists(st.fixed_dictionaries({
    "caller": word, "purpose": word, "categories": st.lists(word, max_size=3).map(tuple),
    "allowed": st.booleans(), "reason": word, "subject_id": st.none() | word,
    "http_route": st.none() | word, "http_status": st.none() | st.integers(100, 599),
}), min_size=1, max_size=20)


def test_the_childs_rows_are_the_journals_records(keys: Keys, tmp_path: Path) -> None:
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys, index="auto"))

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(decisions)
    def check(many: list[dict[str, Any]]) -> None:
        ids = trail.record_many_fields(EventKind.DECISION, many)
        trail.flush()
        records = [r[1] for r in read_journal(trail.journal.folder) if isinstance(r, tuple)]
        rows = rows_of(decode_many(records)[0])
        stored = trail.store.rows(f"SELECT {EVENT_COLUMNS} FROM audit_event")
        assert sorted(map(tuple, stored)) == sorted(map(tuple, rows))
        picked = ("caller", "purpose", "reason", "http_route", "http_status")
        got = dict(trail.store.rows(
            f"SELECT event_id, json_array({', '.join(picked)}) FROM audit_event"))
        assert [orjson.loads(got[i]) for i in ids] == [[f.get(n) for n in picked] for f in many]

    try:
        check()
    finally:
        trail.close()


def test_a_sigterm_to_the_services_group_leaves_the_child_to_the_service(
    keys: Keys, tmp_path: Path
) -> None:
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys, index="auto"))
    child = trail.child
    assert child is not None
    trail.record_fields(EventKind.DECISION, FIELDS)
    trail.flush()  # it runs
    pid = child.pid
    os.kill(pid, signal.SIGTERM)  # as systemd or a shell signals the whole group
    trail.record_fields(EventKind.DECISION, FIELDS)
    trail.close()  # ... and the service then stops it, after its closing checkpoint is indexed
    assert (child.pid, child.restarts) == (pid, 0)
    assert gone(pid)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    assert store.rows("SELECT count(*) FROM audit_event") == [(2,)]
    assert store.rows("SELECT kind FROM audit_checkpoint ORDER BY seq, kind")[-1] == ("close",)
    store.close()


def policies(pid: int) -> dict[int, int]:
    """Each thread of process ``pid``: its scheduling policy (``/proc/PID/task/TID/stat``)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = int(fields[38])  # field 41, counted from field 3 (state)
    return out


def test_the_childs_indexer_runs_under_sched_idle_and_its_main_thread_does_not(
    keys: Keys, tmp_path: Path
) -> None:
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys, index="auto"))
    child = trail.child
    assert child is not None
    try:
        trail.record_fields(EventKind.DECISION, FIELDS)
        trail.flush()  # caught up: the indexer's thread goes idle
        until(lambda: os.SCHED_IDLE in policies(child.pid).values())
        seen = policies(child.pid)
        assert seen[child.pid] == os.SCHED_OTHER  # the thread that relieves a starved lane
        assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
        assert list(seen.values()).count(os.SCHED_IDLE) == 1  # the lane's indexer alone
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the service's own: untouched
    finally:
        trail.close()


HOG = "import os; os.sched_setaffinity(0, {int(os.environ['CPU'])})\nwhile True: pass"


def test_an_idle_index_starved_by_a_busy_cpu_is_relieved_and_catches_up(
    keys: Keys, tmp_path: Path
) -> None:
    """A normal-policy process that never sleeps, on the child's one CPU, leaves an idle
    thread next to no CPU time: the child's main thread hands the lane to a new thread."""
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys, index="auto"))
    child = trail.child
    assert child is not None
    cpu = min(os.sched_getaffinity(0))
    hog = None
    try:
        trail.record_fields(EventKind.DECISION, FIELDS)
        trail.flush()
        until(lambda: os.SCHED_IDLE in policies(child.pid).values())
        for tid in policies(child.pid):  # threads started later inherit their creator's CPU
            os.sched_setaffinity(tid, {cpu})
        hog = subprocess.Popen([sys.executable, "-c", HOG], env={**os.environ, "CPU": str(cpu)})
        many = [{**FIELDS, "subject_id": f"s{i}"} for i in range(5000)]
        for start in range(0, len(many), 1000):
            trail.record_many_fields(EventKind.DECISION, many[start:start + 1000])
        # An idle thread beside the hog took about 60 s for these; relieved, about 1 s.
        trail.flush(timeout=30)
        assert trail.store.rows(
            "SELECT count(*) FROM audit_event WHERE kind = 'decision'") == [(5001,)]
        hog.kill()
        hog.wait()
        hog = None
        # caught up, the relieving thread goes idle again: a relief lasts its backlog, not
        # seconds more (the latency of requests right after a burst depends on it)
        until(lambda: os.SCHED_IDLE in policies(child.pid).values(), timeout=3.0)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        trail.close()
