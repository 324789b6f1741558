"""The audit console at scale: each page's first response and the subject report.

Bulk-loads ``--events`` plausible decisions (spread over 30 days, 16 callers,
``events / 20`` data subjects, one in seven denied) into a fresh SQLite store
(and, with ``--postgres``, a throw-away PostgreSQL server), starts the console on
real uvicorn on loopback, and times each page over HTTP with an auditor's
bearer token: the first response after start, then the median of ``--repeat``
more. The subject report is a POST look-up (the policy decides, the trail
records it) followed by the report page of a subject with about 20 accesses.
The bulk rows are not chained, so the integrity check reports them as altered;
its time is still that of reading and checking every event.

Usage: python bench/console.py [--events 1000000] [--repeat 5] [--postgres] [--no-sqlite]
                               [--no-verify] [--keep DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py sits beside this file: as a script, its folder must not shadow the stdlib.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "console"))

from consolekit import AUDITOR, UvicornThread, console_settings, token

from guard.audit import load_hmac_key, open_store, pseudonymise
from guard.audit._event import FIELD_NAMES
from guard.audit._schema import INSERT_EVENT
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
    """``n`` decision rows, oldest first, over 30 days from ``start``."""
    subjects = max(1, n // 20)
    step = timedelta(days=30) / n
    for i in range(n):
        caller, party, country, purpose, route = (
            CALLERS[15] if i % 1000 == 0 else CALLERS[i % 15])
        allowed = i % 7 != 0
        ts = (start + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        values = {
            "event_id": f"{i:08x}-0000-7000-8000-{i:012x}", "kind": "decision",
            "ts": ts, "caller": caller, "party_type": party, "country": country,
            "purpose": purpose, "categories": '["identity","contact"]', "action": "read",
            "allowed": int(allowed), "reason": "allowed" if allowed else "category_not_granted",
            "rule": '["rules.csv:313"]' if allowed else '["check:category_not_granted"]',
            "lawful_basis": '["contract"]', "policy_version": "sha256:bench",
            "subject": pseudonymise(key, f"c-{(i * 7919) % subjects}"), "http_method": "GET",
            "http_route": route, "latency_us": 40, "writer_id": "bench", "seq": i + 1,
            "prev_hash": "", "hash": ""}
        yield tuple(values.get(name) for name in FIELD_NAMES)


def load_sqlite(path: Path, n: int, key: bytes, start: datetime) -> None:
    """Create the store (schema and indexes) and insert ``n`` rows in one transaction."""
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    batch: list[tuple[object, ...]] = []
    for row in rows(n, key, start):
        batch.append(row)
        if len(batch) == 50_000:
            conn.executemany(INSERT_EVENT, batch)
            batch.clear()
    conn.executemany(INSERT_EVENT, batch)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def load_postgres(url: str, n: int, key: bytes, start: datetime) -> None:
    """Create the schema, COPY ``n`` rows in, ANALYZE."""
    import psycopg

    store = open_store(url)
    store.rows("SELECT 1")  # creates the schema (PostgreSQL stores make it on first use)
    store.close()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(
                f"COPY audit_event ({', '.join(FIELD_NAMES)}) FROM STDIN") as copy:
            for row in rows(n, key, start):
                copy.write_row(row)
        conn.execute("ANALYZE audit_event")


def timed(client: httpx.Client, method: str, url: str, **kw: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    answer = client.request(method, url, **kw)  # type: ignore[arg-type]
    return (time.perf_counter() - t0) * 1000, answer.status_code


def measure(settings: Settings, repeat: int, newest: str,
            verify: bool = True) -> list[tuple[str, float, float, int]]:
    """(page, first ms, median ms of the repeats, status) for every page."""
    out: list[tuple[str, float, float, int]] = []
    with UvicornThread(create_console(settings)) as server, httpx.Client(
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


def report(kind: str, n: int, loaded: float, results: list[tuple[str, float, float, int]]) -> None:
    print(f"\n{kind}: {n:,} events (bulk load {loaded:.0f} s)")
    print(f"{'page':<48} {'first':>10} {'median':>10}  status")
    for name, first, median, status in results:
        med = "-" if median != median else f"{median:8.1f} ms"  # NaN: measured once
        print(f"{name:<48} {first:8.1f} ms {med:>10}  {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the integrity check (minutes per million events)")
    parser.add_argument("--keep", type=Path, help="folder to keep (and reuse) the SQLite store in")
    args = parser.parse_args()
    n = args.events
    with contextlib.ExitStack() as stack:
        base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base.mkdir(parents=True, exist_ok=True)
        settings = console_settings(base)
        key = load_hmac_key(settings.audit.hmac_key, create=True)
        start = datetime.now(UTC) - timedelta(days=30)
        newest = (start + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        db = base / "audit.db"
        if not args.no_sqlite:
            t0 = time.perf_counter()
            if not db.exists():
                load_sqlite(db, n, key, start)
            loaded = time.perf_counter() - t0
            report("SQLite", n, loaded,
                   measure(settings, args.repeat, newest, not args.no_verify))
        if args.postgres:
            from bench._pg import fresh_database, pg_server

            with pg_server() as pg:
                if pg is None:
                    print("PostgreSQL server binaries not found; skipped")
                    return
                url = fresh_database(pg, "console")
                t0 = time.perf_counter()
                load_postgres(url, n, key, start)
                loaded = time.perf_counter() - t0
                pg_settings = settings.model_copy(update={"audit": settings.audit.model_copy(
                    update={"store": url})})
                report("PostgreSQL", n, loaded,
                       measure(pg_settings, args.repeat, newest, not args.no_verify))


if __name__ == "__main__":
    main()
