"""The published durable end, ``guard audit index`` (the external indexer) and a late store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from guard._errors import AuditUnavailableError, ConfigError
from guard.audit import (
    AuditStoreError,
    EventKind,
    load_public_key,
    new_event_id,
    open_store,
    verify,
)
from guard.audit._event import GENESIS_HASH
from guard.audit._fields import Linker, content
from guard.audit._follow import Follower
from guard.audit._journal import Journal, durable_end, segments
from guard.audit._jtrail import JournalTrail, journal_folder, wait_indexed
from guard.audit._sqlite import SqliteStore
from guard.audit._store import indexed_offset
from guard.config import AuditSettings
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    Keys,
    assert_lost_none_doubled_none,
    frame,
    trail_settings,
)

FIELDS = {"caller": "svc:crm", "purpose": "p", "categories": ("c",), "allowed": True,
          "reason": "allowed", "subject_id": "cust-1"}
GUARD = [sys.executable, "-c", "from guard.cli import main; main()"]


def records(count: int) -> list[bytes]:
    """``count`` journal records of one unkeyed chain."""
    out, prev = [], GENESIS_HASH
    linker = Linker("w", None)
    for seq in range(1, count + 1):
        head = content(EventKind.DECISION, FIELDS, HMAC_KEY, "2026-01-01T00:00:00.000000Z",
                       new_event_id())
        prev, record = linker.link(head, seq, prev)
        out.append(record)
    return out


def test_records_written_but_not_published_are_not_indexed(tmp_path: Path) -> None:
    lane = tmp_path / "j"
    journal = Journal(lane)
    made = records(5)
    first, second = made[:2], made[2:]
    journal.append(first)
    [(_, path)] = segments(lane)
    with path.open("ab") as handle:  # written, not yet synced: the page cache shows them
        handle.write(b"".join(frame(r) for r in second))
    assert durable_end(lane) == 2
    store = SqliteStore(tmp_path / "audit.db")
    follower = Follower(lane, store, interval=0.01)
    follower.discover()
    follower.catch_up(30)
    assert store.rows("SELECT count(*) FROM audit_event") == [(2,)]
    assert indexed_offset(store, journal.journal_id) == 2
    assert follower.progress() == "1 lane(s), 0 record(s) behind"
    follower.close()
    journal.close()
    store.close()


def test_a_writer_publishes_its_end_after_each_sync_and_again_after_recovery(
    tmp_path: Path
) -> None:
    lane = tmp_path / "j"
    journal = Journal(lane)
    journal.append([b"a", b"b"])
    assert durable_end(lane) == 2
    [(_, path)] = segments(lane)
    journal.close()  # (it cuts the zeros ahead of the records)
    with path.open("ab") as handle:  # a writer killed between its write and its sync
        handle.write(frame(b"c") + frame(b"torn")[:5])
    assert durable_end(lane) == 2
    Journal(lane).close()  # recovery: the torn frame is cut, the whole one synced and published
    assert durable_end(lane) == 3


def test_one_indexer_per_journal_folder(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.db")
    follower = Follower(tmp_path / "j", store)
    with pytest.raises(ConfigError, match="already indexing"):
        Follower(tmp_path / "j", store)
    env = {**os.environ, "GUARD_CONFIG": os.devnull}
    second = subprocess.run(
        [*GUARD, "audit", "index", "--once", "--journal", str(tmp_path / "j"),
         "--store", f"sqlite:///{tmp_path / 'audit.db'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    follower.close()
    store.close()
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1
    assert "another `guard audit index` is already indexing" in second.stderr


def test_an_external_trail_indexes_nothing_and_flush_waits_for_the_indexer(
    store_url: str, keys: Keys, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"
    trail = JournalTrail(trail_settings(store_url, keys, journal=folder))
    for _ in range(20):
        trail.record_fields(EventKind.DECISION, FIELDS)
    with pytest.raises(AuditUnavailableError, match="did not catch up"):
        trail.flush(timeout=0.2)  # nobody indexes
    follower = Follower(folder, open_store(store_url), interval=0.01)
    follower.discover()
    trail.flush()
    assert trail.store.rows("SELECT count(*) FROM audit_event") == [(20,)]
    trail.close()
    follower.discover()
    follower.catch_up(30)  # the closing checkpoint too: the lane of a stopped trail
    follower.close()
    follower.store.close()
    store = open_store(store_url, create=False)
    assert verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY).ok
    assert store.rows("SELECT kind FROM audit_checkpoint ORDER BY seq, kind")[-1] == ("close",)
    store.close()


def test_wait_indexed_waits_for_the_external_indexer(keys: Keys, tmp_path: Path) -> None:
    settings = AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}", index="external",
                             signing_key=keys.signing, hmac_key=tmp_path / "hmac.key")
    trail = JournalTrail(settings)
    for _ in range(5):
        trail.record_fields(EventKind.DECISION, FIELDS)
    with pytest.raises(AuditUnavailableError, match="did not catch up"):
        wait_indexed(settings, timeout=0.2)  # nobody indexes
    follower = Follower(journal_folder(settings), open_store(settings.store), interval=0.01)
    follower.discover()
    wait_indexed(settings)
    assert trail.store.rows("SELECT count(*) FROM audit_event") == [(5,)]
    follower.close()
    follower.store.close()
    trail.close()


@pytest.mark.postgres
def test_the_trail_starts_while_the_store_is_down_and_indexes_once_it_is_up(
    postgres_url: str, keys: Keys, tmp_path: Path
) -> None:
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    name = f"late_{os.getpid()}_{time.monotonic_ns()}"
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"  # a database that does not exist yet
    trail = JournalTrail(trail_settings(url, keys, journal=tmp_path / "journal", index="auto"),
                         timeout=1)  # its child process indexes once the store is up
    ids = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(3)]  # durable
    deadline = time.monotonic() + 30
    while "index behind" not in (why := trail.ready())[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert why[0]
    assert "index behind" in why[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        trail.flush()
        deadline = time.monotonic() + 30  # the child's next status line says it works again
        while trail.ready() != (True, "audit journal writable") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trail.ready() == (True, "audit journal writable")
        stored = {r[0] for r in trail.store.rows("SELECT event_id FROM audit_event")}
        trail.close()
        assert stored == set(ids)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


WRITER = r"""
import sys, threading
from pathlib import Path
from guard.audit import EventKind, JournalTrail
from guard.config import AuditSettings

url, key, hmac, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
trail = JournalTrail(AuditSettings(  # a new segment at every batch
    store=url, signing_key=key, hmac_key=hmac, journal=folder, checkpoint_every=50,
    index="external").model_copy(update={"journal_segment_mb": 0}))
out = threading.Lock()

def work(n):
    i = 0
    while True:
        event_id = trail.record_fields(EventKind.DECISION, {
            "caller": f"svc:{n}", "purpose": "p", "categories": ("c",), "allowed": True,
            "reason": "allowed", "subject_id": f"{n}-{i}"})
        with out:
            sys.stdout.write(event_id + "\n")
            sys.stdout.flush()
        i += 1

for n in range(8):
    threading.Thread(target=work, args=(n,), daemon=True).start()
threading.Event().wait()
"""


def test_sigkill_of_the_indexer_and_of_the_writer_loses_nothing_and_doubles_nothing(
    store_url: str, keys: Keys, tmp_path: Path
) -> None:
    folder = tmp_path / "journal"
    env = {**os.environ, "GUARD_CONFIG": os.devnull}
    index = [*GUARD, "audit", "index", "--journal", str(folder), "--store", store_url]
    hmac = trail_settings(store_url, keys).hmac_key
    writer = subprocess.Popen([sys.executable, "-c", WRITER, store_url, str(keys.signing),
                               str(hmac), str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=tmp_path)
    lines: list[bytes] = []
    drain = threading.Thread(target=lambda: lines.extend(writer.stdout or ()), daemon=True)
    drain.start()
    started: list[subprocess.Popen[bytes]] = []
    try:
        for round_ in range(3):  # the indexer is killed twice while the writer rotates
            with (tmp_path / f"index-{round_}.err").open("wb") as err:
                started.append(subprocess.Popen(index, env=env, cwd=tmp_path,
                                                stdout=subprocess.PIPE, stderr=err))
            indexer = started[-1]
            assert indexer.stdout is not None
            indexer.stdout.readline()  # it runs
            wanted, deadline = _indexed(store_url) + 100, time.monotonic() + 60
            while _indexed(store_url) < wanted and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _indexed(store_url) >= wanted, (tmp_path / f"index-{round_}.err").read_text()
            if round_ < 2:
                os.kill(indexer.pid, signal.SIGKILL)  # most likely within an index transaction
                indexer.wait(30)
        os.kill(writer.pid, signal.SIGKILL)  # the writer too, mid-rotation
        writer.wait(30)
        drain.join(30)
        acknowledged = [line.decode().strip() for line in lines if line.endswith(b"\n")]
        assert len(acknowledged) >= 300
        indexer.send_signal(signal.SIGTERM)
        indexer.communicate(timeout=60)
        assert indexer.returncode == 0, (tmp_path / "index-2.err").read_text()
    finally:
        for process in [writer, *started]:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    done = subprocess.run([*index, "--once"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, check=False)  # the stopped writer's lane, recovered
    assert done.returncode == 0, done.stderr
    assert "up to their durable end" in done.stdout

    assert_lost_none_doubled_none(folder / "lane-0", store_url, acknowledged, keys)


def _indexed(url: str) -> int:
    """How many records the store has indexed, over every journal (0: no store yet)."""
    try:
        store = open_store(url, create=False)
    except AuditStoreError:
        return 0
    try:
        return int(store.rows("SELECT coalesce(sum(next_offset), 0) FROM audit_journal_offset")
                   [0][0])
    except AuditStoreError:
        return 0
    finally:
        store.close()


def test_a_bad_interval_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "GUARD_CONFIG": os.devnull}
    done = subprocess.run(
        [*GUARD, "audit", "index", "--once", "--interval", "0", "--journal", str(tmp_path / "j"),
         "--store", f"sqlite:///{tmp_path / 'audit.db'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr == "guard: error: --interval and --every must be more than 0 seconds\n"
