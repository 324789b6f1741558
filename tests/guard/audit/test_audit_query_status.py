"""A decision's final status in every reader: its outcome event's, else its own ``http_status``.

The middleware records a read (and a denial) as one event carrying the status
it was answered with, and a write as a decision followed by an ``outcome``
event. The query layer, the subject report, ``guard audit query`` and the
console's data layer show the same status for both shapes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.audit import (
    EventFilter,
    EventKind,
    Store,
    load_hmac_key,
    open_store,
    pseudonymise,
    query_events,
    subject_report,
)
from guard.audit._event import outcome_fields
from guard.audit._report import render_json, render_markdown
from middleware.console._data import Filters, decisions_page, subject_events
from tests.guard.audit.conftest import keys_at, make_trail

D = "2026-11-{:02d}T10:00:00.000000Z"
# caller -> (the decision's own http_status, the outcome event's status or None)
SHAPES = {
    "svc:read": (203, None),        # a read: one event with its status
    "svc:write": (None, 201),       # a write: durable first, its status follows
    "svc:aborted": (200, 200),      # a read whose body broke off: status and an outcome
    "svc:lost": (None, None),       # a write whose outcome never came
}
EXPECTED = {"svc:read": 203, "svc:write": 201, "svc:aborted": 200, "svc:lost": None}


def _fill(url: str, folder: Path) -> None:
    """Record the four shapes about subject ``alice`` through a journal trail."""
    key = load_hmac_key(folder / ".guard" / "subject-hmac.key", create=True)
    trail = make_trail(url, keys_at(folder / ".guard" / "audit-signing.key"), hmac_key=key,
                       journal=folder / "journal")
    for day, (caller, (status, outcome)) in enumerate(SHAPES.items(), start=1):
        event_id = trail.record_fields(EventKind.DECISION, {
            "caller": caller, "purpose": "relationship.management", "categories": ("contact",),
            "action": "read" if status else "write", "allowed": True, "reason": "allowed",
            "lawful_basis": ("contract",), "subject_id": "alice", "http_method": "GET",
            "http_route": "/customers/{customer_id}", "http_status": status,
            "ts": D.format(day)})
        if outcome is not None:
            trail.record_fields(EventKind.OUTCOME, outcome_fields(event_id, outcome, None))
    trail.close()


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    _fill(store_url, tmp_path)
    reader = open_store(store_url, create=False)
    yield reader
    reader.close()


def _alice(tmp_path: Path) -> str:
    return pseudonymise(load_hmac_key(tmp_path / ".guard" / "subject-hmac.key"), "alice")


def test_query_and_report_take_the_decisions_own_status(store: Store, tmp_path: Path) -> None:
    rows = query_events(store, EventFilter())
    assert {r.event.caller: r.outcome_status for r in rows} == EXPECTED
    report = subject_report(store, _alice(tmp_path))
    assert {a.recipient: a.outcome_status for a in report.accesses} == EXPECTED
    assert {a["recipient"]: a["outcome_status"]
            for a in json.loads(render_json(report))["accesses"]} == EXPECTED
    markdown = render_markdown(report)
    for caller, status in EXPECTED.items():
        line = next(x for x in markdown.splitlines() if x.startswith(f"| {D[:8]}")
                    and f"| {caller} |" in x)
        assert line.endswith(f"| {'-' if status is None else status} |")


def test_the_console_takes_the_decisions_own_status(store: Store, tmp_path: Path) -> None:
    page = decisions_page(store, Filters(), cursor=None, size=10)
    assert {r.event.caller: r.status for r in page.rows} == EXPECTED
    assert {r.event.caller: r.status
            for r in subject_events(store, _alice(tmp_path))} == EXPECTED


def test_guard_audit_query_prints_the_decisions_own_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from guard.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GUARD_CONFIG", os.devnull)
    _fill("sqlite:///audit.db", tmp_path)

    def run(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["guard", "audit", "query", *args])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code in (0, None)
        return capsys.readouterr().out

    lines = [json.loads(x) for x in run("--json").splitlines()]
    assert {x["caller"]: x["outcome_status"] for x in lines} == EXPECTED
    table = list(csv.DictReader(io.StringIO(run("--csv"))))
    assert {x["caller"]: x["outcome_status"] for x in table} == {
        c: "" if s is None else str(s) for c, s in EXPECTED.items()}
    text = run()
    for caller, status in EXPECTED.items():
        line = next(x for x in text.splitlines() if caller in x)
        assert line.rstrip(" │|").split()[-1] == ("-" if status is None else str(status))
