"""``guard subject``, ``guard check --subject`` and the auditors' view, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard._types import Request
from guard.audit import open_store
from tests.security.clikit import run

SUBJECT = "cust-0042"


def entries(url: str) -> list[tuple[str, str]]:
    reader = open_store(url, create=False)
    try:
        return [(str(r[0]), str(r[1])) for r in
                reader.rows("SELECT kind, purpose FROM subject_register ORDER BY rowid")]
    finally:
        reader.close()


def events(url: str, kind: str) -> list[tuple[str, str, str | None]]:
    reader = open_store(url, create=False)
    try:
        return [(str(r[0]), str(r[1]), r[2]) for r in reader.rows(
            "SELECT reason, subject, detail FROM audit_event WHERE kind = ? ORDER BY ts",
            (kind,))]
    finally:
        reader.close()


CHECK = ["check", "--caller", "svc:marketing", "--purpose", "marketing.advertising",
         "--category", "contact.email"]


def test_object_then_check_denies_and_audits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    assert run(monkeypatch, capsys, *CHECK, "--subject", SUBJECT)[0] == 0
    code, out, err = run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose",
                         "marketing", "--ref", "T-7")
    assert (code, err) == (0, "")
    assert out.startswith("recorded objection to marketing")
    code, out, _ = run(monkeypatch, capsys, *CHECK, "--subject", SUBJECT)
    assert code == 1
    assert "reason objection_recorded; rule register:objection:marketing:" in out
    assert run(monkeypatch, capsys, *CHECK, "--subject", "someone-else")[0] == 0
    # The change is an audit event naming the subject only by pseudonym.
    ((reason, subject, detail),) = events(store, "subject_right")
    assert reason == "objection"
    assert SUBJECT not in subject
    assert len(subject) == 64
    assert json.loads(str(detail))["ref"] == "T-7"
    assert entries(store) == [("objection", "marketing")]


def test_batch_lines_take_a_subject(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    run(monkeypatch, capsys, "subject", "restrict", SUBJECT)
    line = {"caller": "svc:crm", "purpose": "relationship.management",
            "categories": ["identity"]}
    stdin = "\n".join(json.dumps(x) for x in (line, {**line, "subject": SUBJECT},
                                              {**line, "subject": "x"}))
    code, out, _ = run(monkeypatch, capsys, "check", "--batch", "-", stdin=stdin)
    assert code == 0
    reasons = [json.loads(x)["reason"] for x in out.splitlines()]
    assert reasons == ["allowed", "processing_restricted", "allowed"]


def test_explain_shows_the_register_checks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    run(monkeypatch, capsys, "subject", "erase", SUBJECT)
    code, out, _ = run(monkeypatch, capsys, "explain", "--caller", "svc:crm", "--purpose",
                       "relationship.management", "--category", "identity", "--subject",
                       SUBJECT, "--json")
    assert code == 1
    steps = {s["check"]: s["passed"] for s in json.loads(out)["steps"]}
    assert steps["retention_expired"] is True
    assert steps["erasure_requested"] is False


@pytest.mark.parametrize(("args", "message"), [
    (["object", SUBJECT, "--purpose", "customer.registration"], "covers no objectable purpose"),
    (["object", SUBJECT, "--purpose", "marketing", "--override", "--ref", "x"], "absolute"),
    (["consent", SUBJECT, "--purpose", "marketing.nope"], "unknown purpose"),
    (["end", SUBJECT, "--on", "2024-02-30"], "not a date"),
    (["end", SUBJECT, "--on", "soon"], "not a date"),
    (["erase", SUBJECT, "--refuse"], "legal reason"),
])
def test_refusals_are_one_line_exit_2_and_change_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str,
    args: list[str], message: str
) -> None:
    run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose", "marketing")
    before_entries = entries(store)
    before_events = events(store, "subject_right")
    code, out, err = run(monkeypatch, capsys, "subject", *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("guard: error: ")
    assert message in err
    assert entries(store) == before_entries
    assert events(store, "subject_right") == before_events


def test_show_lists_entries_and_purposes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    run(monkeypatch, capsys, "subject", "consent", SUBJECT, "--purpose", "marketing.third_party")
    run(monkeypatch, capsys, "subject", "end", SUBJECT, "--on", "2019-01-01")
    code, out, _ = run(monkeypatch, capsys, "subject", "show", SUBJECT, "--json")
    assert code == 0
    data = json.loads(out)
    assert [e["kind"] for e in data["entries"]] == ["consent_granted", "end_of_relationship"]
    may = {p["purpose"]: p["may_use"] for p in data["purposes"]}
    assert may["rights.request"] is True
    assert may["legal.compliance"] is False  # 2019 + 6 years is over
    assert may["marketing.third_party"] is False
    assert {p["reason"] for p in data["purposes"] if not p["may_use"]} == {"retention_expired"}
    code, out, _ = run(monkeypatch, capsys, "subject", "show", SUBJECT)
    assert code == 0
    assert "end_of_relationship" in out
    assert "rights.request" in out


def test_filter_prints_usable_subjects_in_order_each_audited_with_one_batch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    run(monkeypatch, capsys, "subject", "object", "b", "--purpose", "marketing")
    run(monkeypatch, capsys, "subject", "erase", "d")
    code, out, err = run(monkeypatch, capsys, "subject", "filter", "--caller", "svc:marketing",
                         "--purpose", "marketing.advertising", "--category", "contact.email",
                         stdin="e\nb\na\n\nd\nc\n")
    assert code == 0
    assert out.splitlines() == ["e", "a", "c"]
    batch = err.strip().rsplit(" ", 1)[-1]
    decisions = events(store, "decision")
    assert len(decisions) == 3
    ((detail,),) = {(d[2],) for d in decisions}
    assert str(detail).startswith(f"batch:{batch} asker:cli:")
    assert all(d[0] == "allowed" for d in decisions)


def test_audit_report_and_query_show_the_register(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str,
    tmp_path: Path
) -> None:
    from guard._guard import Guard
    from guard.config import load_settings

    run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose", "marketing",
        "--ref", "T-9")
    with Guard.from_settings(load_settings()) as guard:
        checked = guard.check(Request("svc:marketing", "marketing.advertising",
                                      ("contact.email",), subject=SUBJECT))
    assert checked.decision.reason.value == "objection_recorded"
    code, out, _ = run(monkeypatch, capsys, "audit", "query", "--reason", "objection_recorded",
                       "--json")
    assert code == 0
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert row["reason"] == "objection_recorded"
    code, out, _ = run(monkeypatch, capsys, "audit", "report", "--subject", SUBJECT,
                       "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert [(e["kind"], e["purpose"], e["ref"]) for e in report["register"]] == \
        [("objection", "marketing", "T-9")]
    code, out, _ = run(monkeypatch, capsys, "audit", "report", "--subject", SUBJECT)
    assert "## Rights requests (subject register)" in out
    assert "| objection | marketing |" in out


def test_ids_that_are_not_utf8_are_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    bad = b"cust-\xff".decode("utf-8", "surrogateescape")  # how Python hands over such argv
    for args in (["subject", "restrict", bad], ["subject", "show", bad]):
        code, out, err = run(monkeypatch, capsys, *args)
        assert (code, out) == (2, "")
        assert err == "guard: error: the subject id is not valid UTF-8 text\n"
    code, out, err = run(monkeypatch, capsys, "subject", "filter", "--caller", "svc:crm",
                         "--purpose", "relationship.management", "--category", "identity",
                         stdin=b"a\n\xff\nb\n")
    assert code == 0
    assert out.splitlines() == ["a", "b"]
    assert "line 2 is not UTF-8; left out" in err
