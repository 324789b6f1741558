"""The console end to end in Debian's Chromium: sign in, filter, subject report, exports,
live tail, charts, integrity, accessibility; the raw subject id never leaves the form."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from consolekit import AUDITOR, SUBJECT, TRAFFIC, World, send, token
from pypdf import PdfReader

from guard.audit import load_hmac_key, pseudonymise, wait_indexed

pytestmark = pytest.mark.chromium

ASSETS = Path(__file__).with_name("assets")
SCREENSHOTS = os.environ.get("GUARD_CONSOLE_SCREENSHOTS")
"""Set to a folder (docs/img) to keep the screenshots the tests take."""


@pytest.fixture(scope="module")
def context(browser: Any, world: World) -> Iterator[Any]:
    """One signed-in browser context for the module; every URL it asks for is kept."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True,
                              bypass_csp=True)  # bypass_csp only lets the tests inject axe
    ctx.on("request", lambda request: world.urls.append(request.url))
    page = ctx.new_page()
    page.goto(world.url + "/decisions")
    assert page.url.endswith("/signin")
    page.fill("#token", token(world.settings, "svc:crm"))
    page.click("button[type=submit]")
    assert "not valid for an auditor" in page.inner_text("[role=alert]")
    page.fill("#token", token(world.settings, AUDITOR))
    page.click("button[type=submit]")
    page.wait_for_url("**/decisions")
    assert page.inner_text("#auditor") == AUDITOR
    page.close()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    opened = context.new_page()
    try:
        yield opened
    finally:
        opened.close()


def shot(page: Any, world: World, name: str) -> None:
    """A screenshot under the test folder, and in $GUARD_CONSOLE_SCREENSHOTS when set."""
    path = world.base / f"{name}.png"
    page.screenshot(path=str(path))
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / f"console-{name}.png")


def rows_of(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


def test_filter_and_open_an_event(page: Any, world: World) -> None:
    page.goto(world.url + "/decisions")
    assert len(rows_of(page, "#decisions")) > 10
    shot(page, world, "decisions")
    page.fill("#f-caller", "grp:exalens-us")
    page.select_option("#f-outcome", "denied")
    page.click("text=Filter")
    page.wait_for_url("**/decisions?**")
    rows = rows_of(page, "#decisions")
    assert rows
    assert all(r[1] == "grp:exalens-us" and r[6] == "denied" for r in rows)
    page.click("#decisions tbody tr:first-child a")
    page.wait_for_url("**/events/**")
    verdict = page.inner_text(".verdict")
    assert verdict.startswith("Denied")
    assert "check:" in verdict
    assert page.locator("a[href*='/policies?old=']").count() == 1
    shot(page, world, "event")


def test_subject_report_and_its_exports(page: Any, world: World) -> None:
    page.goto(world.url + "/subject")
    page.fill("#subject", SUBJECT)
    page.click("text=Show accesses")
    page.wait_for_url(re.compile(r".*/subject/[0-9a-f]{64}\?grant=[0-9a-f-]{36}$"))
    pseudonym = pseudonymise(load_hmac_key(world.settings.audit.hmac_key), SUBJECT)
    assert page.inner_text("#pseudonym") == pseudonym
    recipients = {r[0]: r for r in rows_of(page, "#recipients")}
    assert {"svc:crm", "grp:exalens-nl", "grp:exalens-in", AUDITOR} <= set(recipients)
    transfers = {(r[0], r[1], r[2]) for r in rows_of(page, "#transfers")}
    assert ("grp:exalens-in", "IN", "idta") in transfers
    assert ("grp:exalens-nl", "NL", "adequate") in transfers
    register = rows_of(page, "#register")
    assert [(r[2], r[3], r[5], r[6]) for r in register] == [
        ("objection", "marketing", "test:dpo", "ticket-17")]
    decisions = rows_of(page, "#subject-decisions")
    assert any(r[1] == "grp:exalens-us" and r[7] == "refused" for r in decisions)
    assert any(r[1] == AUDITOR and r[4] == "rights.request" for r in decisions)
    shot(page, world, "subject")

    with page.expect_download() as pdf_download:
        page.click("#export-pdf")
    text = "\n".join(p.extract_text() for p in PdfReader(pdf_download.value.path()).pages)
    assert "Right-of-access report" in text
    assert pseudonym in text.replace("\n", "")
    for expected in ("svc:crm", "grp:exalens-in", "idta", "Transfers outside the UK",
                     "Rights requests", "objection", "ticket-17"):
        assert expected in text
    assert SUBJECT not in text

    with page.expect_download() as csv_download:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert {r["recipient"] for r in rows} >= {"svc:crm", "grp:exalens-us", AUDITOR}
    assert any(r["recipient"] == "grp:exalens-us" and r["allowed"] == "no" for r in rows)
    assert all(SUBJECT not in value for r in rows for value in r.values())


MANY = "c-0500"
"""A subject with more decisions than a page holds."""


def test_many_decisions_show_as_kinds_and_every_decision_is_reachable_page_by_page(
        page: Any, world: World) -> None:
    for _ in range(14):  # 14 x 8 requests: three pages of 50
        for caller, purpose, path in TRAFFIC:
            send(world.example, world.settings, caller, purpose, path, MANY)
    wait_indexed(world.settings.audit)
    page.goto(world.url + "/subject")
    page.fill("#subject", MANY)
    page.click("text=Show accesses")
    page.wait_for_url(re.compile(r".*/subject/[0-9a-f]{64}\?grant=[0-9a-f-]{36}$"))
    pseudonym = pseudonymise(load_hmac_key(world.settings.audit.hmac_key), MANY)
    with sqlite3.connect(world.db) as conn:
        stored = conn.execute("SELECT event_id, caller, allowed FROM audit_event WHERE "
                              "kind = 'decision' AND subject = ?", (pseudonym,)).fetchall()
    assert len(stored) == 14 * len(TRAFFIC) + 1  # and the auditor's look-up
    assert page.inner_text("#decision-summary").startswith(
        f"{len(stored)} decision(s): {sum(a for _, _, a in stored)} allowed, "
        f"{sum(1 - a for _, _, a in stored)} refused.")
    # One line per kind, each with its number: together, every decision once.
    kinds = rows_of(page, "#subject-kinds")
    assert len(kinds) <= len(TRAFFIC) + 1
    assert sum(int(k[0]) for k in kinds) == len(stored)
    for caller in {c for _, c, _ in stored}:
        for allowed in (0, 1):
            mine = [k for k in kinds if k[3] == caller and k[9].startswith(
                "allowed" if allowed else "refused")]
            assert sum(int(k[0]) for k in mine) == sum(
                1 for _, c, a in stored if c == caller and a == allowed), (caller, allowed)
    assert any(k[3] == "grp:exalens-us" and k[9].startswith("refused: ") for k in kinds)
    shot(page, world, "subject-kinds")
    # Each decision on its own, a page at a time, oldest first: every one reachable.
    size = world.settings.console.page_size
    seen: list[str] = []
    pages = 1
    while True:
        rows = page.eval_on_selector_all(
            "#subject-decisions tbody tr a",
            "links => links.map(a => a.getAttribute('href').split('/events/')[1])")
        assert 0 < len(rows) <= size
        seen += rows
        if page.query_selector("#decisions-next") is None:
            break
        page.click("#decisions-next")
        pages += 1
        page.wait_for_url(f"**page={pages}")
        assert page.inner_text("#decisions-page") == str(pages)
    assert pages == -(-len(stored) // size)
    assert sorted(seen) == sorted(event_id for event_id, _, _ in stored)
    page.click("#decisions-prev")
    page.wait_for_url(f"**page={pages - 1}")
    page.add_script_tag(path=str(ASSETS / "axe.min.js"))
    violations = page.evaluate("""async () => (await axe.run()).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id)""")
    assert not violations


def test_the_look_up_and_every_view_are_in_the_trail(world: World) -> None:
    pseudonym = pseudonymise(load_hmac_key(world.settings.audit.hmac_key), SUBJECT)
    wait_indexed(world.settings.audit)  # the views just made are durable; the index follows
    with sqlite3.connect(world.db) as conn:
        lookups = conn.execute(
            "SELECT event_id, allowed FROM audit_event WHERE kind = 'decision' AND caller = ? "
            "AND purpose = 'rights.request' AND subject = ?", (AUDITOR, pseudonym)).fetchall()
        assert lookups
        assert all(allowed == 1 for _, allowed in lookups)
        views = {r[0] for r in conn.execute(
            "SELECT http_route FROM audit_event WHERE kind = 'outcome' AND decision_ref = ?",
            (lookups[-1][0],))}
    assert {"/subject/{pseudonym}", "/subject/{pseudonym}/report.pdf",
            "/subject/{pseudonym}/report.csv"} <= views


def test_live_tail_shows_a_new_decision(page: Any, world: World) -> None:
    page.goto(world.url + "/decisions")
    page.click("#tail-toggle")
    page.wait_for_function("document.getElementById('tail-status').innerText.startsWith('Live')")
    assert send(world.example, world.settings, "svc:billing", "legal.compliance",
                "/customers/{id}/payment", "c-0100") == 200
    row = page.wait_for_selector("#decisions tbody tr.new >> text=legal.compliance")
    assert row is not None
    page.click("#tail-toggle")


def test_overview_charts_render_with_data(page: Any, world: World) -> None:
    page.goto(world.url + "/overview")
    page.wait_for_selector("#charts[data-ready=true]")
    totals = page.evaluate("""() => Object.fromEntries(
        ["c-time", "c-callers", "c-purposes", "c-transfers", "c-routes"].map(id => [id,
          Chart.getChart(id).data.datasets.reduce(
            (n, d) => n + d.data.reduce((a, b) => a + b, 0), 0)]))""")
    assert all(total > 0 for total in totals.values()), totals
    labels = page.evaluate("Chart.getChart('c-transfers').data.labels")
    assert {"IN", "NL"} <= set(labels)
    shot(page, world, "overview")


def test_policy_history_lists_the_loaded_policy(page: Any, world: World) -> None:
    page.goto(world.url + "/policies")
    rows = rows_of(page, "#policy-events")
    assert rows
    assert all(r[1] == "loaded" for r in rows)
    version = rows[0][2]
    page.goto(world.url + f"/policies?old={version}&new={version}")
    assert "No change in access" in page.inner_text("#diff")


PAGES = ("/decisions", "/subject", "/overview", "/integrity", "/policies")


def test_no_serious_accessibility_violations(page: Any, world: World) -> None:
    first_event = rows_of_link(page, world)
    found: dict[str, list[Any]] = {}
    for path in (*PAGES, first_event):
        page.goto(world.url + path)
        if path == "/overview":
            page.wait_for_selector("#charts[data-ready=true]")
        if path == "/integrity":  # the first visit starts a check: the page reloads when done
            page.wait_for_selector("#integrity-summary", timeout=120_000)
            page.wait_for_selector("#integrity-running", state="detached")
        page.add_script_tag(path=str(ASSETS / "axe.min.js"))
        violations = page.evaluate("""async () => (await axe.run()).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))""")
        if violations:
            found[path] = violations
    assert not found


def rows_of_link(page: Any, world: World) -> str:
    page.goto(world.url + "/decisions")
    href = page.get_attribute("#decisions tbody tr:first-child a", "href")
    assert href
    return str(href)


def test_the_raw_subject_id_is_in_no_url_log_or_row(world: World) -> None:
    assert world.urls
    assert any("/subject/" in u for u in world.urls)
    assert not [u for u in world.urls if SUBJECT in u]
    assert world.logs.lines
    assert any("/subject/" in line for line in world.logs.lines)
    assert not [line for line in world.logs.lines if SUBJECT in line]
    with sqlite3.connect(world.db) as conn:
        for table in ("audit_event", "audit_checkpoint", "subject_register"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                assert not [v for v in row if SUBJECT in str(v)], row


def test_integrity_turns_red_after_a_tampered_row(page: Any, world: World) -> None:
    page.goto(world.url + "/integrity")
    page.click("text=Check again")
    page.wait_for_selector("#integrity-summary.allowed")
    page.wait_for_selector("#integrity-running", state="detached")
    shot(page, world, "integrity")
    with sqlite3.connect(world.db) as conn:
        conn.execute("UPDATE audit_event SET purpose = 'marketing' WHERE event_id = "
                     "(SELECT min(event_id) FROM audit_event WHERE kind = 'decision')")
    page.click("text=Check again")
    page.wait_for_selector("#integrity-summary.denied")
    assert "altered" in page.inner_text("#chains")
    shot(page, world, "integrity-tampered")


def test_signing_out_forgets_the_secure_cookie(browser: Any, world: World) -> None:
    ctx = browser.new_context()  # of its own: the module's context stays signed in
    try:
        page = ctx.new_page()
        page.goto(world.url + "/signin")
        page.fill("#token", token(world.settings, AUDITOR))
        page.click("button[type=submit]")
        page.wait_for_url("**/decisions")
        assert [cookie["secure"] for cookie in ctx.cookies()] == [True]
        page.click("text=Sign out")
        page.wait_for_url("**/signin")
        assert ctx.cookies() == []
        page.goto(world.url + "/decisions")
        assert page.url.endswith("/signin")
    finally:
        ctx.close()
