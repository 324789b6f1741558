"""The audit console at scale: each page's first response and the subject report.

Bulk-loads ``--events`` plausible decisions (spread over 30 days, 16 callers,
``events / 20`` data subjects, one in seven denied) into a fresh SQLite store
(and, with ``--postgres``, a throw-away PostgreSQL server), without the secondary
indexes (built after) and with the progress shown, fills the hourly summary the
charts read, starts the console on
real uvicorn on loopback, and times each page over HTTP with an auditor's
bearer token: the first response after start, then the median of ``--repeat``
more. The subject report is a POST look-up (the policy decides, the trail
records it) followed by the report page of a subject with about 20 accesses.
The bulk rows are not chained, so the integrity check reports them as altered;
its time is still that of reading and checking every event.

With ``--keep DIR`` the stores stay in DIR (the SQLite file and the PostgreSQL
server's data) and later runs reuse them; ``--load-only`` stops after loading.

``--pdf 100,1000,5000`` is a separate, small mode (no large store): for each
count, a fresh SQLite store holding that many decisions about one long-standing
customer (three years, eight kinds of access, one in seven refused), the
console on uvicorn, and the report page, the reply's CSV export (the floor: the
same grant check, store read and audit record) and PDF export timed over HTTP, then
the store read
and the PDF layout timed in the process. ``--pdf-distinct 100,500`` adds the
worst case: every decision unlike any other, so each is a line of its own. The store
read is timed both ways in the same run: "two reads" is the audit report's read of the
allowed decisions and a second read of every decision (each with its outcome), as the
console read before; "read" is the console's one read. With ``--postgres`` every case
runs again on a throw-away PostgreSQL server.

Usage: python bench/console.py [--events 1000000] [--repeat 5] [--postgres] [--no-sqlite]
                               [--no-verify] [--keep DIR] [--load-only]
       python bench/console.py --pdf 100,1000,5000 [--pdf-distinct 100,500] [--repeat 5]
                               [--postgres]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py sits beside this file: as a script, its folder must not shadow the stdlib.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "console"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "middleware"))

from consolekit import AUDITOR, console_settings, token
from subjectkit import subject_decisions, write_decisions
from tokenkit import UvicornThread

from bench._pg import fresh_database, pg_server
from guard.audit import load_hmac_key, open_store, pseudonymise
from guard.audit._event import FIELD_NAMES
from guard.audit._schema import INSERT_EVENT, fill_subject_index
from guard.audit._summary import BACKFILL
from guard.config import Settings
from middleware.console import create_console

ONE = "/customers/{customer_id}"
CALLERS = [("svc:crm", "internal", "GB", "relationship.management", ONE),
           ("svc:billing", "internal", "GB", "order.processing", ONE + "/payment"),
           ("svc:marketing", "internal", "GB", "marketing", ONE + "/profile"),
           ("svc:support", "internal", "GB", "rights.request", ONE),
           ("grp:exalens-nl", "group", "NL", "business.administration", ONE),
           ("grp:exalens-in", "group", "IN", "business.administration", ONE),
           ("grp:exalens-us", "group", "US", "business.administration", ONE),
           ("proc:mailer", "processor", "US", "marketing", ONE + "/contact"),
           ("proc:cloudhost", "processor", "IE", "business.administration", ONE),
           ("svc:analytics", "internal", "GB", "analytics.improvement", ONE + "/devices")]
CALLERS += [(f"svc:team{n}", "internal", "GB", "business.administration", ONE)
            for n in range(6)]
RARE = "svc:team5"
"""One caller in a thousand events: the filter that walks furthest."""


def rows(n: int, key: bytes, start: datetime) -> Iterator[tuple[object, ...]]:
    """``n`` decision rows, oldest first, over 30 days from ``start``.

    Fast enough for tens of millions: pseudonyms are computed once per subject and
    the timestamp's text once per second.
    """
    subjects = max(1, n // 20)
    pseudonyms = [pseudonymise(key, f"c-{s}") for s in range(subjects)]
    first_us = int(start.timestamp() * 1_000_000)
    span_us = 30 * 86_400 * 1_000_000
    second, prefix = -1, ""
    fixed: dict[str, object] = {
        "kind": "decision", "categories": '["identity","contact"]', "action": "read",
        "lawful_basis": '["contract"]', "policy_version": "sha256:bench", "http_method": "GET",
        "latency_us": 40, "writer_id": "bench", "prev_hash": "", "hash": ""}
    varying = ("event_id", "ts", "caller", "party_type", "country", "purpose", "allowed",
               "reason", "rule", "subject", "http_route", "seq")
    # Each row is the fixed values with the varying ones put in place by position.
    template = [fixed.get(name) for name in FIELD_NAMES]
    slots = [FIELD_NAMES.index(name) for name in varying]
    for i in range(n):
        caller, party, country, purpose, route = (
            CALLERS[15] if i % 1000 == 0 else CALLERS[i % 15])
        allowed = i % 7 != 0
        micros = first_us + span_us * i // n
        if micros // 1_000_000 != second:
            second = micros // 1_000_000
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        row = template.copy()
        for slot, value in zip(slots, (
                f"{i:08x}-0000-7000-8000-{i:012x}", f"{prefix}.{micros % 1_000_000:06d}Z",
                caller, party, country, purpose, int(allowed),
                "allowed" if allowed else "category_not_granted",
                '["rules.csv:313"]' if allowed else '["check:category_not_granted"]',
                pseudonyms[(i * 7919) % subjects], route, i + 1), strict=True):
            row[slot] = value
        yield tuple(row)


class Progress:
    """Prints how far a bulk load is, every ``every`` rows, on one line."""

    def __init__(self, what: str, n: int, every: int = 250_000) -> None:
        self.what, self.n, self.every = what, n, every
        self.t0 = time.perf_counter()

    def tick(self, done: int) -> None:
        """Report ``done`` rows if it is a multiple of ``every`` (or the end)."""
        if done % self.every == 0 or done == self.n:
            took = time.perf_counter() - self.t0
            print(f"\r{self.what}: {done:,}/{self.n:,} rows, {took:.0f} s "
                  f"({done / max(took, 1e-9):,.0f} rows/s)", end="", file=sys.stderr,
                  flush=True)
            if done == self.n:
                print(file=sys.stderr)

    def step(self, what: str) -> None:
        """Report a step after the rows (an index build...)."""
        print(f"{self.what}: {what} at {time.perf_counter() - self.t0:.0f} s",
              file=sys.stderr, flush=True)


# (name, CREATE statement) of every index on audit_event but its keys', as the store holds it.
SQLITE_INDEXES = ("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                  "AND tbl_name = 'audit_event' AND sql IS NOT NULL")
POSTGRES_INDEXES = ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_event' "
                    "AND indexname NOT IN (SELECT conname FROM pg_constraint)")


def load_sqlite(path: Path, n: int, key: bytes, start: datetime) -> None:
    """Create the store, bulk-insert ``n`` rows without the secondary indexes, build them."""
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    progress = Progress("SQLite bulk load", n)
    indexes = conn.execute(SQLITE_INDEXES).fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    batch: list[tuple[object, ...]] = []
    for done, row in enumerate(rows(n, key, start), 1):
        batch.append(row)
        if len(batch) == 50_000:
            conn.executemany(INSERT_EVENT, batch)
            batch.clear()
        progress.tick(done)
    conn.executemany(INSERT_EVENT, batch)
    for name, sql in indexes:
        conn.execute(sql)
        progress.step(f"index {name} built")
    fill_subject_index(conn.execute)  # the index adds its own rows' subjects: these went around
    progress.step("subject index filled")
    conn.execute("DELETE FROM audit_hour")  # rows went in behind the store's back: count them
    conn.execute(BACKFILL)
    progress.step("hourly summary filled")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    progress.step("analysed")


def load_postgres(url: str, n: int, key: bytes, start: datetime) -> None:
    """Create the schema, COPY ``n`` rows in without the secondary indexes, build them."""
    import psycopg

    store = open_store(url)
    store.rows("SELECT 1")  # creates the schema (PostgreSQL stores make it on first use)
    store.close()
    progress = Progress("PostgreSQL bulk load", n)
    with psycopg.connect(url) as conn:
        indexes = conn.execute(POSTGRES_INDEXES).fetchall()
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '1GB'")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        with conn.cursor() as cur, cur.copy(
                f"COPY audit_event ({', '.join(FIELD_NAMES)}) FROM STDIN") as copy:
            for done, row in enumerate(rows(n, key, start), 1):
                copy.write_row(row)
                progress.tick(done)
        for name, sql in indexes:
            conn.execute(sql)
            progress.step(f"index {name} built")
        conn.execute("DELETE FROM audit_hour")  # rows went in behind the store's back
        conn.execute(BACKFILL)
        progress.step("hourly summary filled")
        conn.commit()
        conn.execute("ANALYZE audit_event")
    progress.step("analysed")


def timed(client: httpx.Client, method: str, url: str, **kw: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    answer = client.request(method, url, **kw)  # type: ignore[arg-type]
    return (time.perf_counter() - t0) * 1000, answer.status_code


def measure(settings: Settings, repeat: int, newest: str,
            verify: bool = True) -> list[tuple[str, float, float, int]]:
    """(page, first ms, median ms of the repeats, status) for every page."""
    out: list[tuple[str, float, float, int]] = []
    with UvicornThread(create_console(settings), log_level="warning",
                       timeout_graceful_shutdown=2) as server, httpx.Client(
            base_url=server.url, timeout=600,
            headers={"authorization": f"Bearer {token(settings, AUDITOR)}"}) as client:
        first_page = client.get("/decisions")
        cursor = first_page.text.split('id="older" href="')[1].split('"')[0].replace("&amp;", "&")
        deep = client.get(cursor)
        for _ in range(50):  # walk 50 pages down for a deep cursor
            nxt = deep.text.split('id="older" href="')
            if len(nxt) < 2:
                break
            deep = client.get(nxt[1].split('"')[0].replace("&amp;", "&"))
        deep_link = deep.text.split('id="older" href="')[1].split('"')[0].replace("&amp;", "&")
        event_id = first_page.text.split('/events/')[1].split('"')[0]
        pages = [
            ("decisions, no filter", "GET", "/decisions", {}),
            ("decisions, 50 pages deep (cursor)", "GET", deep_link, {}),
            ("decisions, caller + denied", "GET",
             "/decisions?caller=svc:billing&outcome=denied", {}),
            ("decisions, purpose tree + country", "GET",
             "/decisions?purpose=marketing&country=US", {}),
            (f"decisions, rare caller ({RARE}, 1 in 1,000)", "GET",
             f"/decisions?caller={RARE}", {}),
            ("decisions, last hour", "GET", f"/decisions?since={newest[:13]}:00:00Z", {}),
            ("one event", "GET", f"/events/{event_id}", {}),
            ("overview page", "GET", "/overview", {}),
            ("overview chart data, last 24 h", "GET", "/overview/data.json?since=24h", {}),
            ("overview chart data, last 7 days", "GET", "/overview/data.json?since=7d", {}),
            ("overview chart data, last 30 days", "GET", "/overview/data.json?since=30d", {}),
            ("policies", "GET", "/policies", {}),
            ("subject look-up (POST, recorded)", "POST", "/subject", {"data": {"subject": "c-7"}}),
        ]
        for name, method, url, kw in pages:
            first, status = timed(client, method, url, **kw)
            again = [timed(client, method, url, **kw)[0] for _ in range(repeat)]
            out.append((name, first, statistics.median(again), status))
        look = client.post("/subject", data={"subject": "c-7"})
        report = look.headers["location"]
        first, status = timed(client, "GET", report)
        again = [timed(client, "GET", report)[0] for _ in range(repeat)]
        accesses = client.get(report).text.count('class="allowed"><td><a href')
        out.append((f"subject report page (~{accesses} accesses)", first,
                    statistics.median(again), status))
        first, status = timed(client, "GET", report.replace("?", "/report.pdf?"))
        out.append(("subject report PDF", first,
                    statistics.median([timed(client, "GET", report.replace("?", "/report.pdf?"))[0]
                                       for _ in range(repeat)]), status))
        if not verify:
            return out
        first, status = timed(client, "GET", "/integrity")  # starts a verification
        out.append(("integrity page (starts a verification)", first, float("nan"), status))
        t0 = time.perf_counter()
        while "integrity-running" in client.get("/integrity").text:
            time.sleep(0.5)
        out.append(("integrity: verification of every event done",
                    (time.perf_counter() - t0) * 1000 + first, float("nan"), 200))
    return out


def report(kind: str, n: int, loaded: float, migrated: float, size: int,
           results: list[tuple[str, float, float, int]]) -> None:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{kind}: {n:,} events, store {size / 2**30:.2f} GiB (bulk load {loaded:.0f} s, "
          f"schema migration on open {migrated:.1f} s); "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load}")
    print(f"{'page':<48} {'first':>10} {'median':>10}  status")
    for name, first, median, status in results:
        med = "-" if median != median else f"{median:8.1f} ms"  # NaN: measured once
        print(f"{name:<48} {first:8.1f} ms {med:>10}  {status}")


def migrate(url: str) -> tuple[float, str]:
    """Open the store as the guard does (running any pending migration): seconds, newest ts."""
    t0 = time.perf_counter()
    store = open_store(url)
    try:
        store.rows("SELECT 1")
        took = time.perf_counter() - t0
        newest = store.rows("SELECT max(ts) FROM audit_event")[0][0]
    finally:
        store.close()
    return took, str(newest)


def pdf_case(n: int, distinct: bool, repeat: int, pg: str | None = None) -> str:
    """One line of the PDF mode's table: ``n`` decisions about one subject.

    With ``pg`` (a PostgreSQL server's URL) the store is a fresh database there.
    """
    import io

    from pypdf import PdfReader

    from guard.audit import EventFilter, query_events, subject_report
    from middleware.console._export import to_pdf
    from middleware.console._pdf import group_decisions
    from middleware.console._subject import subject_view

    with tempfile.TemporaryDirectory() as tmp:
        settings = console_settings(Path(tmp))
        if pg is not None:
            url = fresh_database(pg, f"pdf_{n}_{int(distinct)}")
            settings = settings.model_copy(update={
                "audit": settings.audit.model_copy(update={"store": url})})
        key = load_hmac_key(settings.audit.hmac_key, create=True)
        raw = f"c-pdf-{n}"
        pseudonym = pseudonymise(key, raw)
        store = open_store(settings.audit.store)
        try:
            write_decisions(store, subject_decisions(pseudonym, n, distinct=distinct))
        finally:
            store.close()
        with UvicornThread(create_console(settings), log_level="warning",
                           timeout_graceful_shutdown=2) as server, httpx.Client(
                base_url=server.url, timeout=600,
                headers={"authorization": f"Bearer {token(settings, AUDITOR)}"}) as client:
            report = client.post("/subject", data={"subject": raw}).headers["location"]
            timings = {}
            for fmt in ("page", "csv", "pdf"):
                url = report if fmt == "page" else report.replace("?", f"/report.{fmt}?")
                first, status = timed(client, "GET", url)
                assert status == 200, (fmt, status)
                timings[fmt] = (first, statistics.median(
                    timed(client, "GET", url)[0] for _ in range(repeat)))
            body = client.get(report.replace("?", "/report.pdf?")).content
        store = open_store(settings.audit.store)
        try:
            twice, reads, layouts = [], [], []
            for _ in range(repeat):
                t0 = time.perf_counter()  # before: the report's read, then every decision's
                subject_report(store, pseudonym)
                query_events(store, EventFilter(subject=pseudonym), limit=None)
                t1 = time.perf_counter()
                view = subject_view(store, pseudonym, None)
                t2 = time.perf_counter()
                to_pdf(view)
                twice.append((t1 - t0) * 1000)
                reads.append((t2 - t1) * 1000)
                layouts.append((time.perf_counter() - t2) * 1000)
        finally:
            store.close()
    lines = len(group_decisions(view.decisions))
    pages = len(PdfReader(io.BytesIO(body)).pages)
    (csv_first, csv_median), (pdf_first, pdf_median) = timings["csv"], timings["pdf"]
    page_first, page_median = timings["page"]
    return (f"{'PostgreSQL' if pg else 'SQLite':<10} {len(view.decisions):>9,} "
            f"{'all' if distinct else 'few':>8} {lines:>6,} {pages:>5} {len(body) / 1024:>6.0f} "
            f"{page_first:>7.1f} /{page_median:>7.1f} "
            f"{csv_first:>7.1f} /{csv_median:>7.1f} {pdf_first:>7.1f} /{pdf_median:>7.1f} "
            f"{statistics.median(twice):>10.1f} {statistics.median(reads):>8.1f} "
            f"{statistics.median(layouts):>8.1f}")


def pdf_mode(counts: list[int], distinct: list[int], repeat: int, postgres: bool) -> None:
    """The reply's PDF by number of decisions about the subject (no large store needed)."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"reply PDF by decisions; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"load average {load}; first / median of {repeat}, ms; 'two reads' is the "
          "report's and the decisions' reads, 'read' the console's one")
    print(f"{'store':<10} {'decisions':>9} {'distinct':>8} {'lines':>6} {'pages':>5} "
          f"{'KiB':>6} {'report page':>17} {'CSV (floor)':>17} {'PDF':>17} "
          f"{'two reads':>10} {'read':>8} {'layout':>8}")
    cases = [(n, False) for n in counts] + [(n, True) for n in distinct]
    for n, alone in cases:
        print(pdf_case(n, alone, repeat), flush=True)
    if postgres:
        with pg_server() as pg:
            if pg is None:
                print("PostgreSQL server binaries not found; skipped")
            else:
                for n, alone in cases:
                    print(pdf_case(n, alone, repeat, pg), flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"done {datetime.now(UTC):%H:%M} UTC, load average {load}")


def _counts(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", action="store_true",
                        help="also on PostgreSQL (with --pdf too)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the integrity check (minutes per million events)")
    parser.add_argument("--keep", type=Path,
                        help="folder to keep (and reuse) the stores in: the SQLite file and, "
                             "with --postgres, the PostgreSQL server's data")
    parser.add_argument("--load-only", action="store_true",
                        help="load the stores (into --keep) and stop")
    parser.add_argument("--pdf", type=_counts, metavar="N,N,...",
                        help="only time the reply's PDF for subjects with these many decisions")
    parser.add_argument("--pdf-distinct", type=_counts, default=[], metavar="N,N,...",
                        help="with --pdf: also subjects whose decisions all differ")
    args = parser.parse_args()
    if args.pdf_distinct and args.pdf is None:
        parser.error("--pdf-distinct needs --pdf")
    if args.pdf is not None:
        pdf_mode(args.pdf, args.pdf_distinct, args.repeat, args.postgres)
        return
    n = args.events
    with contextlib.ExitStack() as stack:
        base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base.mkdir(parents=True, exist_ok=True)
        settings = console_settings(base)
        key = load_hmac_key(settings.audit.hmac_key, create=True)
        start = datetime.now(UTC) - timedelta(days=30)
        db = base / "audit.db"
        if not args.no_sqlite:
            t0 = time.perf_counter()
            if not db.exists():
                load_sqlite(db, n, key, start)
            loaded = time.perf_counter() - t0
            migrated, newest = migrate(settings.audit.store)
            size = sum(p.stat().st_size for p in base.glob("audit.db*"))
            if not args.load_only:
                report("SQLite", n, loaded, migrated, size,
                       measure(settings, args.repeat, newest, not args.no_verify))
        if args.postgres:
            pg_keep = base / "postgres" if args.keep else None
            with pg_server(keep=pg_keep) as pg:
                if pg is None:
                    print("PostgreSQL server binaries not found; skipped")
                    return
                marker = base / "postgres-loaded"
                t0 = time.perf_counter()
                if pg_keep is not None and marker.exists():
                    url = pg.rsplit("/", 1)[0] + "/console"
                else:
                    url = fresh_database(pg, "console")
                    load_postgres(url, n, key, start)
                    if pg_keep is not None:
                        marker.write_text(f"{n}\n")
                loaded = time.perf_counter() - t0
                migrated, newest = migrate(url)
                import psycopg

                with psycopg.connect(url) as conn:
                    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                    size = int(row[0]) if row else 0
                if not args.load_only:
                    pg_settings = settings.model_copy(update={
                        "audit": settings.audit.model_copy(update={"store": url})})
                    report("PostgreSQL", n, loaded, migrated, size,
                           measure(pg_settings, args.repeat, newest, not args.no_verify))


if __name__ == "__main__":
    main()
