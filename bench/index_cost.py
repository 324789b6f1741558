"""Where an index transaction's CPU goes, per record, by transaction size (SQLite, PostgreSQL).

Writes a journal of ``--events`` decision records (64 a batch, as 64 producers
would), then indexes it on this one thread into fresh stores in transactions of
each ``--sizes`` records (300: 3,000 events/s on a 0.1 s timer; 5,000: a
backlog), timing each step with the thread's CPU clock: read + decode
(``decode_many``), the event INSERT (with its B-trees), the hourly summary,
the offset row, and the commit. Variants run interleaved, ``--rounds`` times each:

- ``python``: SQLite's rows decoded in Python (``decode_many``), as its ``index_records``;
- ``sql``: the rows built in the store from the records' JSON: SQLite
  ``json_each`` (here only), PostgreSQL ``index_records`` (``jsonb_array_elements``,
  PostgreSQL's only path);
- ``no-ts`` / ``no-subject`` / ``no-decision-ref`` / ``no-policy``: SQLite without that
  index of ``audit_event`` (what each B-tree costs; not a proposal; ``no-subject``: without
  SQLite's FTS5 subject index of schema 6, or PostgreSQL's B-tree), ``no-summary``:
  without the ``audit_hour`` upsert, ``summary-sql``: the summary counted by SQL from the
  rows inserted (as the store does for a batch some of whose events were stored before);
  ``old-subject``: the
  ``(subject, ts)`` index of schema 5 (SQLite's until schema 6, PostgreSQL's still)
  rebuilt in place of the store's subject index (the same run; PostgreSQL too, as
  ``no-subject`` and ``hour-first``, through ``index_records``); ``hour-first``: the subject
  index keyed by the event's hour first, ``(substr(ts, 1, 13), subject)``;
  ``short-subject``:
  that index on the pseudonym's first 12 characters; ``sorted``: each transaction's rows
  inserted in the subject index's order;
- ``no-writer-seq`` / ``no-event-id``: SQLite's ``audit_event`` rebuilt without its
  ``UNIQUE (writer_id, seq)`` index, or without the ``event_id`` primary key (the
  insert's conflict target then ``(writer_id, seq)``): what each of those B-trees costs;
  ``partial-subject``: schema 5's subject index ``WHERE subject IS NOT NULL`` (with
  ``--subjectless``, that share of the records has no subject);
- ``sync-off``: SQLite ``synchronous=OFF`` (what the WAL sync costs);
- FTS5 subject index options (SQLite; the store's since schema 7: the token of the
  subject's first 12 characters, ``'s' || hex(substr(subject, 1, 12))``, added after the
  rows by one ``INSERT ... SELECT``): ``fts6``: schema 6's, the whole subject's token
  (129 characters) added by a trigger per row; ``fts-trigger``: the store's token added
  by a trigger per row; ``fts-long``: the whole subject's token added after the rows;
  ``fts-unicode61``: FTS5's default tokenizer (the store's is ``ascii``); ``fts-raw``: the
  subject's first 12 characters as the token, not in hex (a hex pseudonym's are one token);
- ``bucket-N``: in place of FTS5, a B-tree ``(rowid >> N, substr(subject, 1, 12), rowid)``
  (WITHOUT ROWID, added after the rows): a look-up would probe each bucket of ``2**N`` rows;
  ``fts-pgsz-N``, ``fts-automerge-N``, ``fts-crisismerge-N``: FTS5's configuration options;
- ``page-1024`` / ``page-8192``: SQLite stores made with that page size (4,096 is
  SQLite's default), ``cache-256m``: the index connection's page cache at 256 MiB
  (32 MiB is the store's), ``mmap``: ``mmap_size`` 1 GiB; ``ckpt-N``: the WAL folded into
  the file every N pages (the store's 8,192; 0: never, what the checkpoints cost).

``--prefill N`` first loads N decision rows (over N / 10 subjects) into every
store (SQLite: a copy of one loaded file per page size; PostgreSQL: a copy of one
loaded database), so the B-trees are those
of a large store rather than a fresh one; dated in past months, or with ``--prefill-now``
in the hour the records are indexed in (the hour-first subject index's worst case).

Usage: python bench/index_cost.py [--events 60000] [--sizes 300,1500,5000] [--rounds 3]
                                  [--no-postgres] [--variants python,sql,...]

For instruction counts (callgrind): ``--save-records FILE`` writes the journal's
records to FILE and stops; ``--records FILE --once`` indexes them once, quietly, with
the first variant and size (into a copy of ``--template`` when given), and
``--setup-only`` stops before indexing (subtract that run's count); the variant ``store``
gives them to ``open_store(...).index_records`` itself (the tree's own, whichever it is):
``valgrind --tool=callgrind python bench/index_cost.py --records FILE --once
--variants python --sizes 500``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

from _pg import fdatasync_floor, fresh_database, pg_server

from guard.audit import EventKind, load_signing_key, open_store
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import ChainKey, decode_many
from guard.audit._journal import Journal, JournalReader
from guard.audit._jwriter import JournalWriter
from guard.audit._schema import ADD_SUBJECTS, INSERT_EVENT, SUBJECT_TOKEN
from guard.audit._store import Store
from guard.audit._summary import count_hours

KEY = b"b" * 32
FIELDS = {"caller": "svc:crm", "party_type": "internal", "country": "GB",
          "purpose": "relationship.management",
          "categories": ("contact.email", "identity.name"), "action": "read",
          "allowed": True, "reason": "allowed", "rule": ("rules.csv:314",),
          "lawful_basis": ("contract", "legitimate_interest"),
          "policy_version": "sha256:5d79139ff05f0ad3", "http_method": "GET",
          "http_route": "/customers/{id}", "http_status": 200, "latency_us": 40}


def write_journal(folder: Path, key: Path, n: int, subjects: int,
                  subjectless: float = 0.0) -> list[bytes]:
    """A journal of about ``n`` decision records (batches of 64); its records
    (``subjectless``: that share of them without a subject)."""
    journal = Journal(folder)
    writer = JournalWriter(journal, hmac_key=KEY, signing_key=load_signing_key(key),
                           writer_id="bench", chain_key=ChainKey(KEY))
    every = round(1 / subjectless) if subjectless else 0
    for start in range(0, n, 64):
        writer.results(EventKind.DECISION,
                       [{**FIELDS, "allowed": (start + i) % 7 != 0,
                         **({} if every and (start + i) % every == 0
                            else {"subject_id": f"c{(start + i) * 7919 % subjects}"})}
                        for i in range(64)])
    writer.close()
    end = journal.next_offset
    journal.close()
    reader = JournalReader(folder, 0)
    records = reader.read(end, end)
    reader.close()
    return records


Steps = dict[str, float]

_HEAD = INSERT_EVENT.split(" VALUES ", 1)[0]
SQLITE_FROM_JSON = (
    f"{_HEAD} SELECT {', '.join(f'value ->> {i}' for i in range(len(FIELD_NAMES)))} "
    "FROM json_each(?) WHERE true ON CONFLICT (event_id) DO NOTHING"
)
"""The ``sql`` variant on SQLite: the rows built by SQLite from the records' JSON array."""


_TS, _SUBJECT = FIELD_NAMES.index("ts"), FIELD_NAMES.index("subject")


def _subject_key(row: tuple[Any, ...]) -> tuple[str, str]:
    return (row[_TS][:13], row[_SUBJECT] or "")


def _hours(values: list[Any]) -> Counter[tuple[Any, ...]]:
    hours: Counter[tuple[Any, ...]] = Counter()
    count_hours(hours, values)
    return hours


def split_records(records: list[bytes]) -> tuple[bytes, list[Any]]:
    """Event records as one JSON array, and the checkpoints decoded."""
    others = [r for r in records if r[:1] != b"["]
    array = b"[" + b",".join(r for r in records if r[:1] == b"[") + b"]"
    return array, (decode_many(others)[1] if others else [])


def timed(steps: Steps, name: str, call: Callable[[], Any]) -> Any:
    """Run ``call``, adding its thread CPU time (µs) to ``steps[name]``."""
    t0 = time.thread_time_ns()
    out = call()
    steps[name] += (time.thread_time_ns() - t0) / 1e3
    return out


class SqliteProbe:
    """The SQLite index transaction, step by step (the statements ``SqliteStore`` runs)."""

    def __init__(self, path: Path, variant: str, template: Path | None = None) -> None:
        from guard.audit import _sqlite

        self._sqlite = _sqlite
        if template is not None:
            shutil.copyfile(template, path)
        elif variant.startswith("page-"):
            make_page_size(path, int(variant.removeprefix("page-")))
        store = open_store(f"sqlite:///{path}")
        store.index_records([], "bench", 0)  # its indexing pragmas
        self.store = store
        self.conn: sqlite3.Connection = store._conn  # type: ignore[attr-defined]
        self.insert = _sqlite._insert_many
        if variant in REBUILT:
            rebuild(self.conn, variant)
            if variant == "no-event-id":
                self.insert = lambda n, absent=(): _sqlite._insert_many(n, absent).replace(
                    "ON CONFLICT (event_id)", "ON CONFLICT (writer_id, seq)")
        dropped = {"no-ts": "audit_event_ts", "no-decision-ref": "audit_event_decision_ref",
                   "no-policy": "audit_event_policy"}.get(variant)
        if variant in DROPS_FTS:
            drop_subject_index(self.conn)
        if variant in ("old-subject", "partial-subject"):
            self.conn.execute("CREATE INDEX audit_event_subject ON audit_event (subject, ts)"
                              + (" WHERE subject IS NOT NULL" if variant != "old-subject" else ""))
        if variant.startswith("bucket-"):  # (rowid >> N, subject's first 12 characters, rowid)
            self.conn.execute("CREATE TABLE audit_subject_at (bucket INTEGER, token TEXT, "
                              "row INTEGER, PRIMARY KEY (bucket, token, row)) WITHOUT ROWID")
        if variant == "hour-first":
            self.conn.execute("CREATE INDEX audit_event_hour_subject ON audit_event "
                              "(substr(ts, 1, 13), subject)")
        if variant == "short-subject":
            self.conn.execute("CREATE INDEX audit_event_hour_subject ON audit_event "
                              "(substr(ts, 1, 13), substr(subject, 1, 12))")
        if dropped:
            self.conn.execute(f"DROP INDEX {dropped}")
        if variant.startswith("fts"):
            fts_variant(self.conn, variant)
        if variant == "sync-off":
            self.conn.execute("PRAGMA synchronous=OFF")
        if variant == "cache-256m":
            self.conn.execute("PRAGMA cache_size=-262144")
        if variant == "mmap":
            self.conn.execute("PRAGMA mmap_size=1073741824")
        if variant.startswith("ckpt-"):  # the WAL folded into the file every N pages (0: never)
            self.conn.execute(f"PRAGMA wal_autocheckpoint={int(variant.removeprefix('ckpt-'))}")
        self.variant = variant
        self.fts = None if variant in DROPS_FTS or variant in ("fts6", "fts-trigger") else (
            ADD_SUBJECTS.replace(_SHORT.format(""), _TOKEN.format(""))
            if variant == "fts-long" else ADD_SUBJECTS.replace(_SHORT.format(""), _RAW.format(""))
            if variant == "fts-raw" else ADD_SUBJECTS)
        if variant.startswith("bucket-"):
            self.fts = (f"INSERT INTO audit_subject_at SELECT rowid >> {int(variant[7:])}, "
                        "substr(subject, 1, 12), rowid FROM audit_event WHERE rowid > ? AND "
                        "rowid <= ? AND subject IS NOT NULL")

    def index(self, records: list[bytes], offset: int, steps: Steps) -> None:
        s = self._sqlite
        conn = self.conn
        if self.variant == "sql":
            _rows, checkpoints = timed(steps, "decode", lambda: split_records(records))
        else:
            rows, checkpoints = timed(steps, "decode", lambda: decode_many(records))
        if self.variant == "sorted":  # by the subject index's key: its entries in order
            rows = timed(steps, "decode", lambda: list(chain.from_iterable(
                sorted(zip(*[iter(rows)] * len(FIELD_NAMES), strict=True), key=_subject_key))))
        timed(steps, "begin", lambda: conn.execute("BEGIN IMMEDIATE"))
        before = timed(steps, "begin", lambda: conn.execute(
            "SELECT coalesce(max(rowid), 0) FROM audit_event").fetchone()[0])
        if self.variant == "sql":
            timed(steps, "insert", lambda: conn.execute(SQLITE_FROM_JSON, (_rows.decode(),)))
        else:
            timed(steps, "insert", lambda: s.insert_rows(conn, rows, self.insert))
        if self.fts is not None:
            timed(steps, "fts", lambda: conn.execute(self.fts, (before, 1 << 62)))
        if self.variant == "summary-sql":  # counted by SQL from the rows inserted
            timed(steps, "summary", lambda: conn.execute(s._ADD_HOURS, (before,)))
        elif self.variant != "no-summary":  # counted from the records, as the store does
            timed(steps, "summary",
                  lambda: conn.executemany(s.ADD_COUNTED, s.counted(_hours(rows))))
        if checkpoints:
            timed(steps, "checkpoints", lambda: conn.executemany(
                s.INSERT_CHECKPOINT, [s.checkpoint_row(c) for c in checkpoints]))
        timed(steps, "offset", lambda: conn.execute(s.SAVE_OFFSET, ("bench", offset)))
        timed(steps, "commit", lambda: conn.execute("COMMIT"))

    def close(self) -> None:
        self.store.close()


REBUILT = ("no-writer-seq", "no-event-id")
_TOKEN, _SHORT = "'s' || hex({}subject)", SUBJECT_TOKEN.format("{}subject")
_RAW = "'s' || substr({}subject, 1, 12)"
"""``fts-raw``'s token: the subject's first 12 characters as they are (a hex pseudonym's)."""
DROPS_FTS = ("no-subject", "old-subject", "short-subject", "hour-first", "partial-subject",
             "bucket-12", "bucket-16")


def fts_variant(conn: sqlite3.Connection, variant: str) -> None:
    """The FTS5 subject index made again, or configured, as ``variant`` says."""
    option, _, number = variant.removeprefix("fts-").rpartition("-")
    if option in ("pgsz", "automerge", "crisismerge"):
        conn.execute("INSERT INTO audit_subject (audit_subject, rank) VALUES (?, ?)",
                     (option, int(number)))
        return
    token = (_TOKEN if variant in ("fts6", "fts-long") else _RAW if variant == "fts-raw"
             else _SHORT)
    drop_subject_index(conn)
    conn.execute("CREATE VIRTUAL TABLE audit_subject USING fts5 (token, content='', "
                 "detail=none, columnsize=0"
                 + ("" if variant in ("fts6", "fts-unicode61") else ", tokenize='ascii'") + ")")
    if variant in ("fts6", "fts-trigger"):
        conn.execute("CREATE TRIGGER audit_subject_add AFTER INSERT ON audit_event "
                     "WHEN new.subject IS NOT NULL BEGIN INSERT INTO audit_subject "
                     f"(rowid, token) VALUES (new.rowid, {token.format('new.')}); END")
    conn.execute(f"INSERT INTO audit_subject (rowid, token) SELECT rowid, {token.format('')} "
                 "FROM audit_event WHERE subject IS NOT NULL")


def drop_subject_index(conn: sqlite3.Connection) -> None:
    """Drop SQLite's subject index: schema 6's ``audit_subject`` and its triggers (or the
    B-tree of schema 5 or of a variant)."""
    for name in ("add", "remove", "change"):
        conn.execute(f"DROP TRIGGER IF EXISTS audit_subject_{name}")
    conn.execute("DROP TABLE IF EXISTS audit_subject")
    for name in ("audit_event_subject", "audit_event_hour_subject"):
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def rebuild(conn: sqlite3.Connection, variant: str) -> None:
    """``audit_event`` made again without its ``(writer_id, seq)`` or ``event_id`` B-tree,
    its rows and other indexes kept."""
    table, = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_event'").fetchone()
    indexes = [sql for (sql,) in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'audit_event' AND type = 'index' "
        "AND sql IS NOT NULL")]
    if variant == "no-writer-seq":
        table = table.replace(",\n            UNIQUE (writer_id, seq)", "")
    else:
        table = table.replace("event_id TEXT PRIMARY KEY", "event_id TEXT NOT NULL")
    assert "UNIQUE" not in table or variant == "no-event-id", table
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE audit_event RENAME TO audit_event_old")
    conn.execute(table)
    conn.execute("INSERT INTO audit_event SELECT * FROM audit_event_old")
    conn.execute("DROP TABLE audit_event_old")
    for sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")


def make_page_size(path: Path, size: int) -> None:
    """An empty SQLite file whose pages will be ``size`` bytes."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={size}")
    conn.execute("CREATE TABLE bench_page_size (x)")
    conn.execute("DROP TABLE bench_page_size")
    conn.close()


def prefilled(tmp: Path, variant: str, rows: int, made: dict[int, Path], now: bool) -> Path:
    """A store file holding ``rows`` bulk-loaded decisions, at the variant's page size
    (``now``: dated in this hour)."""
    from audit import bulk_rows, load_sqlite

    size = int(variant.removeprefix("page-")) if variant.startswith("page-") else 4096
    if size not in made:
        path = tmp / f"prefill-{size}.db"
        make_page_size(path, size)
        loaded = bulk_rows(rows, max(1, rows // 10))[0]
        if now:
            hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
            loaded = ((*r[:2], f"{hour}{str(r[2])[13:]}", *r[3:]) for r in loaded)
        load_sqlite(path, loaded)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        made[size] = path
    return made[size]


def pg_database(pg: str, name: str, rows: int, now: bool) -> str:
    """A fresh database ``name``, a copy of one holding ``rows`` bulk-loaded decisions
    (made on first use, as :func:`prefilled`)."""
    import psycopg
    from audit import bulk_rows, load_postgres

    if not rows:
        return fresh_database(pg, name)
    with psycopg.connect(pg, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'prefill'").fetchone():
            loaded = bulk_rows(rows, max(1, rows // 10))[0]
            if now:
                hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
                loaded = ((*r[:2], f"{hour}{str(r[2])[13:]}", *r[3:]) for r in loaded)
            load_postgres(fresh_database(pg, "prefill"), loaded)
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE prefill")
    return pg.rsplit("/", 1)[0] + f"/{name}"


class StoreProbe:
    """A store's whole ``index`` call (PostgreSQL: its client CPU), after the decode."""

    def __init__(self, store: Store, variant: str) -> None:
        self.store = store
        conn = store._connection()  # type: ignore[attr-defined]
        self.backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        if variant in ("old-subject", "no-subject", "hour-first"):
            for name in ("audit_event_subject", "audit_event_hour_subject"):
                conn.execute(f"DROP INDEX IF EXISTS {name}")
        if variant == "old-subject":
            conn.execute("CREATE INDEX audit_event_subject ON audit_event (subject, ts)")
        if variant == "hour-first":
            conn.execute("CREATE INDEX audit_event_hour_subject ON audit_event "
                         "(substr(ts, 1, 13), subject)")
        self.variant = variant

    def index(self, records: list[bytes], offset: int, steps: Steps) -> None:
        timed(steps, "store", lambda: self.store.index_records(records, "bench", offset))

    def close(self) -> None:
        self.store.close()


def process_cpu_us(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in µs (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") * 1e6


def run(probe: SqliteProbe | StoreProbe, records: list[bytes], size: int) -> Steps:
    steps: Steps = defaultdict(float)
    backend = getattr(probe, "backend", None)
    server0 = process_cpu_us(backend) if backend else 0.0
    t0 = time.thread_time_ns()
    for start in range(0, len(records), size):
        probe.index(records[start:start + size], start + size, steps)
    steps["total"] = (time.thread_time_ns() - t0) / 1e3
    if backend:
        steps["server"] = process_cpu_us(backend) - server0
    probe.close()
    return {k: v / len(records) for k, v in steps.items()}


def thread_cpu_us(thread: threading.Thread) -> float:
    """CPU time a thread of this process has used so far, in µs (Linux schedstat)."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e3


def trickle(url: str, key: Path, folder: Path, rate: int, seconds: float, subjects: int,
            interval: float | None = None) -> tuple[float, float, float, float, float]:
    """The in-process indexer (its defaults) behind a journal written at ``rate`` events/s.

    Batches of 30 events every ``30 / rate`` s for ``seconds``. Returns the indexer
    thread's CPU µs per record, (PostgreSQL: the server backend's, else 0), index lag
    p50 / p99 / max ms (durable -> indexed, sampled every 2 ms).
    """
    from guard.audit._indexer import Indexer

    journal = Journal(folder)
    store = open_store(url)
    writer = JournalWriter(journal, hmac_key=KEY, signing_key=load_signing_key(key),
                           writer_id="bench", chain_key=ChainKey(KEY))
    writer.flush()
    indexer = (Indexer(journal.folder, store) if interval is None
               else Indexer(journal.folder, store, interval=interval))
    if not indexer.wait(journal.next_offset, 60):
        raise RuntimeError(f"index did not start: {indexer.failures.cause}")
    backend = None
    if url.startswith("postgresql"):
        backend = int(store._connection().execute(  # type: ignore[attr-defined]
            "SELECT pg_backend_pid()").fetchone()[0])
    durable: list[tuple[float, int]] = []
    indexed: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            indexed.append((time.perf_counter(), indexer.offset))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = thread_cpu_us(indexer._thread)
    server0 = process_cpu_us(backend) if backend else 0.0
    first = journal.next_offset
    step, count = 30 / rate, 0
    t0 = time.perf_counter()
    due = t0
    while due - t0 < seconds:
        writer.results(EventKind.DECISION,
                       [{**FIELDS, "subject_id": f"c{(count + i) * 7919 % subjects}"}
                        for i in range(30)])
        count += 30
        durable.append((time.perf_counter(), journal.next_offset))
        due += step
        time.sleep(max(0.0, due - time.perf_counter()))
    writer.flush()
    if not indexer.wait(journal.next_offset, 60):
        raise RuntimeError(f"index did not catch up: {indexer.failures.cause}")
    records = journal.next_offset - first
    cpu = thread_cpu_us(indexer._thread) - cpu0
    server = process_cpu_us(backend) - server0 if backend else 0.0
    stop.set()
    sampler.join()
    indexer.close()
    writer.close()
    journal.close()
    store.close()
    lags, j = [], 0
    for when, end in durable:
        while j < len(indexed) and indexed[j][1] < end:
            j += 1
        if j < len(indexed):
            lags.append(max(0.0, indexed[j][0] - when))
    lags.sort()
    return (cpu / records, server / records, lags[len(lags) // 2] * 1e3,
            lags[int(len(lags) * 0.99)] * 1e3, lags[-1] * 1e3)


def once(path: Path, variant: str, size: int, template: Path | None, setup_only: bool) -> None:
    """Index the saved records once into a fresh store (or a copy of ``template``)."""
    records = pickle.loads(path.read_bytes())  # the bench's own file
    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-index-"))
    try:
        if variant == "store":  # the store's own index_records (any tree's)
            store = open_store(f"sqlite:///{tmp / 's.db'}")
            store.index_records([], "bench", 0)
            for start in range(0, 0 if setup_only else len(records), size):
                store.index_records(records[start:start + size], "bench", start + size)
            store.close()
            return
        probe = SqliteProbe(tmp / "s.db", variant, template)
        steps: Steps = defaultdict(float)
        probe.index(records[:0], 0, steps)  # what is made on first use, in both runs
        if not setup_only:
            for start in range(0, len(records), size):
                probe.index(records[start:start + size], start + size, steps)
        probe.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--sizes", default="300,1500,5000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="python,sql,no-ts,no-subject,sync-off")
    parser.add_argument("--subjects", type=int, default=5000,
                        help="distinct data subjects among the records")
    parser.add_argument("--subjectless", type=float, default=0.0,
                        help="the share of the records without a subject (as outcome events)")
    parser.add_argument("--trickle", type=int, default=0,
                        help="instead: the indexer behind a journal written at this rate")
    parser.add_argument("--interval", type=float, default=None,
                        help="with --trickle: the indexer's interval (default: its own)")
    parser.add_argument("--seconds", type=float, default=6.0, help="with --trickle")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--prefill", type=int, default=0,
                        help="decision rows loaded into each store first")
    parser.add_argument("--prefill-now", action="store_true",
                        help="the prefilled rows dated in this hour (else in past months)")
    parser.add_argument("--save-records", type=Path, help="write the records there and stop")
    parser.add_argument("--records", type=Path, help="the records --save-records wrote")
    parser.add_argument("--once", action="store_true",
                        help="with --records: index them once (first variant and size), quietly")
    parser.add_argument("--setup-only", action="store_true", help="with --once: do not index")
    parser.add_argument("--template", type=Path, help="with --once: index into a copy of it")
    args = parser.parse_args()
    from guard.audit import _sqlite  # nulls bound as in the index's own processes
    getattr(_sqlite, "bind_nulls_at_once", lambda: None)()  # (older trees: at import)
    sizes = [int(s) for s in args.sizes.split(",")]
    variants = args.variants.split(",")
    if args.once:
        once(args.records, variants[0], sizes[0], args.template, args.setup_only)
        return
    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-index-"))
    key = tmp / "sign.key"
    load_signing_key(key, create=True)
    try:
        p50, p99 = fdatasync_floor(tmp)
        print(f"disk floor: append 300 B + fdatasync p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
              f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
        if args.trickle:
            with pg_server() as pg:
                kinds = ["sqlite"] + ([] if args.no_postgres or pg is None else ["postgresql"])
                print(f"indexer behind {args.trickle} events/s for {args.seconds:g} s: "
                      "indexer thread CPU µs per record (server backend's), index lag ms")
                for rnd in range(args.rounds):
                    for kind in kinds:
                        url = (f"sqlite:///{tmp / f't{rnd}.db'}" if kind == "sqlite"
                               else fresh_database(pg or "", f"t{rnd}"))
                        got = trickle(url, key, tmp / f"t{kind}{rnd}", args.trickle,
                                      args.seconds, args.subjects, args.interval)
                        print(f"{kind:<10} interval {args.interval} indexer {got[0]:.2f} µs "
                              f"(server {got[1]:.2f}), "
                              f"lag p50 {got[2]:.0f} / p99 {got[3]:.0f} / max {got[4]:.0f} ms",
                              flush=True)
            return
        records = write_journal(tmp / "j", key, args.events, args.subjects, args.subjectless)
        if args.save_records:
            args.save_records.write_bytes(pickle.dumps(records))
            return
        print(f"{len(records)} records; CPU µs per record (thread CPU), median of {args.rounds}")
        with pg_server() as pg:
            kinds = ([] if args.no_sqlite else ["sqlite"]) + (
                [] if args.no_postgres or pg is None else ["postgresql"])
            results: dict[tuple[str, str, int], list[Steps]] = defaultdict(list)
            made: dict[int, Path] = {}
            number = 0
            for _ in range(args.rounds):
                for kind in kinds:
                    for size in sizes:
                        for variant in variants:
                            if kind == "postgresql" and variant not in (
                                    "sql", "old-subject", "no-subject", "hour-first"):
                                continue
                            number += 1
                            probe: SqliteProbe | StoreProbe
                            if kind == "sqlite":
                                template = (prefilled(tmp, variant, args.prefill, made,
                                                      args.prefill_now)
                                            if args.prefill else None)
                                probe = SqliteProbe(tmp / f"s{number}.db", variant, template)
                            else:
                                assert pg is not None
                                probe = StoreProbe(open_store(pg_database(
                                    pg, f"p{number}", args.prefill, args.prefill_now)), variant)
                            results[kind, variant, size].append(run(probe, records, size))
            for (kind, variant, size), got in results.items():
                names = sorted({n for g in got for n in g},
                               key=lambda n: (n in ("total", "server"), n))
                parts = ", ".join(f"{n} {statistics.median(g.get(n, 0.0) for g in got):.2f}"
                                  for n in names)
                print(f"{kind:<10} {variant:<10} {size:>6}: {parts}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
