"""The console over HTTP without a browser: sign-in, grants, refusals, paging, the CLI."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from consolekit import (
    AUDITOR,
    SUBJECT,
    UvicornThread,
    console_settings,
    example_service,
    fill,
    token,
)

from guard.audit import AuditEvent, EventKind, JournalTrail, open_store, wait_indexed
from guard.config import Settings
from middleware.console import create_console
from middleware.console._data import Filters, Tail, decisions_page
from tests.guard.audit.conftest import record

OTHER = "svc:crm"
"""An auditor the console lets in but the shipped policy never grants rights.request."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    base = tmp_path_factory.mktemp("console-app")
    settings = console_settings(base)
    settings.console.auditors.append(OTHER)
    with example_service(settings) as example:
        fill(example, settings)
    with UvicornThread(create_console(settings)) as server:
        yield settings, server.url


@contextmanager
def signed_in(settings: Settings, url: str, caller: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as client:
        assert client.post("/signin", data={"token": token(settings, caller)}).status_code == 303
        yield client


def test_every_page_needs_an_auditor(served: tuple[Settings, str]) -> None:
    settings, url = served
    with httpx.Client(base_url=url) as anonymous:
        for path in ("/decisions", "/subject", "/overview", "/overview/data.json",
                     "/integrity", "/policies", "/events/x"):
            answer = anonymous.get(path)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/signin"
        assert anonymous.get("/decisions/tail",
                             headers={"accept": "text/event-stream"}).status_code == 401
        refused = anonymous.post("/signin", data={"token": token(settings, "svc:marketing")})
        assert refused.status_code == 401
        assert "guard_console" not in refused.cookies
        bearer = {"authorization": f"Bearer {token(settings, AUDITOR)}"}
        assert anonymous.get("/decisions", headers=bearer).status_code == 200


def test_pages_carry_a_strict_content_security_policy(served: tuple[Settings, str]) -> None:
    settings, url = served
    with signed_in(settings, url, AUDITOR) as client:
        answer = client.get("/decisions")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"


def test_a_look_up_the_policy_refuses_is_recorded_and_shows_nothing(
        served: tuple[Settings, str]) -> None:
    settings, url = served
    with signed_in(settings, url, OTHER) as client:
        answer = client.post("/subject", data={"subject": SUBJECT})
    assert answer.status_code == 403
    assert "purpose_not_granted" in answer.text
    assert "Recipients" not in answer.text
    wait_indexed(settings.audit)
    db = Path(settings.audit.store.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        refused = conn.execute(
            "SELECT count(*) FROM audit_event WHERE caller = ? AND purpose = 'rights.request' "
            "AND allowed = 0", (OTHER,)).fetchone()[0]
    assert refused == 1


def test_a_look_up_the_trail_cannot_record_is_refused(served: tuple[Settings, str]) -> None:
    settings, url = served
    db = Path(settings.audit.store.removeprefix("sqlite:///"))
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("chattr +i (root, e2fsprogs) makes the journal refuse writes")
    segments = sorted(db.with_name(db.name + ".journal").rglob("*.seg"))
    assert segments
    with signed_in(settings, url, AUDITOR) as client:
        try:  # the journal refuses the append (EPERM), as a failing disk would
            subprocess.run(["chattr", "+i", *map(str, segments)], check=True)
            answer = client.post("/subject", data={"subject": SUBJECT}, timeout=30)
        finally:
            subprocess.run(["chattr", "-i", *map(str, segments)], check=True)
    assert answer.status_code == 503
    assert "audit_unavailable" in answer.text
    assert "Recipients" not in answer.text


def test_a_grant_opens_the_report_only_for_its_auditor(served: tuple[Settings, str]) -> None:
    settings, url = served
    with signed_in(settings, url, AUDITOR) as client:
        location = client.post("/subject", data={"subject": SUBJECT}).headers["location"]
        assert client.get(location).status_code == 200
        forged = location[:-4] + ("0000" if not location.endswith("0000") else "1111")
        assert client.get(forged).status_code == 403
        query = location[location.index("?"):]
        assert client.get("/subject/" + "0" * 64 + query).status_code == 403
    with signed_in(settings, url, OTHER) as client:
        assert client.get(location).status_code == 403
        assert client.get(location.replace("?", "/report.csv?")).status_code == 403


def test_keyset_pages_list_every_decision_once_newest_first(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    # Many decisions share a timestamp: the event id must break the tie.
    stamps = [f"2026-11-0{1 + n % 3}T10:00:00.00000{n % 2}Z" for n in range(47)]
    with JournalTrail(settings.audit) as trail:
        for n, ts in enumerate(stamps):
            record(trail, AuditEvent(event_id=f"01900000-0000-7000-8000-{n:012d}",
                                    kind=EventKind.DECISION, ts=ts, caller=f"svc:{n % 4}",
                                    purpose="p", categories=("c",), action="read",
                                    allowed=n % 2 == 0, reason="allowed", policy_version="v"))
    store = open_store(settings.audit.store, create=False)
    try:
        for size in (1, 5, 46, 47, 100):
            seen: list[tuple[str, str]] = []
            cursor = None
            while True:
                page = decisions_page(store, Filters(), cursor=cursor, size=size)
                seen += [(r.event.ts, r.event.event_id) for r in page.rows]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert seen == sorted(seen, reverse=True)
            assert len(seen) == len(set(seen)) == 47
        only = decisions_page(store, Filters(caller="svc:1", outcome="denied"), cursor=None,
                              size=100)
        assert {r.event.caller for r in only.rows} == {"svc:1"}
        assert not any(r.event.allowed for r in only.rows)
    finally:
        store.close()


def _decision(n: int, ts: str, caller: str = "svc:crm") -> AuditEvent:
    return AuditEvent(event_id=f"01900000-0000-7000-8000-{n:012d}", kind=EventKind.DECISION,
                      ts=ts, caller=caller, purpose="p", categories=("c",), action="read",
                      allowed=True, reason="allowed", policy_version="v")


def test_the_live_tail_shows_a_decision_committed_after_a_newer_one(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    store_url = settings.audit.store
    with JournalTrail(settings.audit) as trail:
        record(trail, _decision(1, "2026-11-01T10:00:00.000000Z"))
        trail.flush()  # indexed: the store holds it
        store = open_store(store_url, create=False)
        try:
            follow = Tail(store, Filters())
            follow.start()
            assert follow.poll() == []
            record(trail, _decision(2, "2026-11-01T10:00:02.000000Z"))
            trail.flush()
            assert [r.event.event_id[-1] for r in follow.poll()] == ["2"]
            # Stamped before decision 2, committed after it (another writer was slower).
            record(trail, _decision(3, "2026-11-01T10:00:01.500000Z"))
            record(trail, _decision(4, "2026-11-01T10:00:03.000000Z", caller="svc:other"))
            trail.flush()
            assert [r.event.event_id[-1] for r in follow.poll()] == ["3", "4"]
            assert follow.poll() == []
            only = Tail(store, Filters(caller="svc:crm"))
            only.start()
            record(trail, _decision(5, "2026-11-01T10:00:02.500000Z", caller="svc:other"))
            record(trail, _decision(6, "2026-11-01T10:00:02.700000Z"))
            trail.flush()
            assert [r.event.event_id[-1] for r in only.poll()] == ["6"]
        finally:
            store.close()


def test_guard_console_without_auditors_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("guard")), "console", "--port", "1"],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "GUARD_CONFIG": os.devnull})
    assert done.returncode == 2
    assert done.stderr.strip() == ("guard: error: no auditor may sign in: set console.auditors "
                                   "or pass --auditor")


@pytest.mark.postgres
def test_the_console_reads_a_postgres_store_and_diffs_stored_policies(
        postgres_url: str, tmp_path: Path) -> None:
    from guard.policy._pgsource import push_policy_dir

    shipped = Path(__file__).resolve().parents[2] / "policies"
    changed = tmp_path / "policy"
    changed.mkdir()
    for name in ("model.conf", "routes.csv", "tests.csv"):
        (changed / name).write_text((shipped / name).read_text())
    rules = (shipped / "rules.csv").read_text()
    line = "p, svc:crm, promotion.prize_draw, usage, read\n"
    assert line in rules
    (changed / "rules.csv").write_text(rules.replace(line, ""))
    old = push_policy_dir(postgres_url, shipped).version
    new = push_policy_dir(postgres_url, changed).version

    settings = console_settings(tmp_path)
    settings = settings.model_copy(update={
        "audit": settings.audit.model_copy(update={"store": postgres_url,
                                                   "journal": tmp_path / "journal"}),
        "policy": settings.policy.model_copy(update={"source": postgres_url})})
    with example_service(settings) as example:
        fill(example, settings)
    with UvicornThread(create_console(settings)) as server, \
            signed_in(settings, server.url, AUDITOR) as client:
        page = client.get("/decisions?caller=grp:exalens-us&outcome=denied")
        assert page.status_code == 200
        assert page.text.count("grp:exalens-us</td>") == 3
        location = client.post("/subject", data={"subject": SUBJECT}).headers["location"]
        report = client.get(location.replace("?", "/report.json?")).json()
        assert {r["recipient"] for r in report["recipients"]} >= {"svc:crm", AUDITOR}
        assert [e["kind"] for e in report["register"]] == ["objection"]
        diff = client.get(f"/policies?old={old}&new={new}").text
        assert "loses read promotion.prize_draw / usage" in diff
        missing = client.get(f"/policies?old={old}&new=sha256:nowhere").text
        assert "is not available" in missing
