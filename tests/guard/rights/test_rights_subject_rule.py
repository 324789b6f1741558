"""The subject rule at the register and ``guard subject``: the ids the sidecar's APIs take."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.policy._load import load_policy
from guard.rights import Change, EntryKind, RegisterRefusedError, validate
from middleware._bounds import subject_ok
from tests.guard.rights.test_rights_cli import entries, events
from tests.security.clikit import run

BAD = ["cust 42", "cust\n42", "cust\x1b[2J", "ünïcode", ".", "..", "a/b", "a;b", "a,b",
       "x" * 129, "a\u2028b", "a%2Fb"]
GOOD = ["cust-0042", "...", "a:b@c~d_e.f", "x" * 128]


@pytest.mark.parametrize("subject", BAD)
@pytest.mark.parametrize("args", [["consent", "--purpose", "marketing"], ["restrict"],
                                  ["erase"], ["end", "--on", "2030-01-01"]])
def test_an_id_outside_the_rule_is_one_line_exit_2_and_nothing_recorded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str,
    subject: str, args: list[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "subject", args[0], subject, *args[1:])
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("guard: error: subject id ")
    assert "Traceback" not in err
    assert "1 to 128 characters from A-Z a-z 0-9 - . _ ~ : @, not '.' or '..'" in err
    assert repr(subject[:60]) in err  # named, escaped (no raw control character)
    assert entries(store) == []
    assert events(store, "subject_right") == []


@pytest.mark.parametrize("subject", GOOD)
def test_an_id_the_rule_takes_is_recorded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str, subject: str
) -> None:
    code, _, err = run(monkeypatch, capsys, "subject", "restrict", subject)
    assert (code, err) == (0, "")
    assert entries(store) == [("restriction", "")]


def test_an_entry_made_before_the_rule_stays_readable_and_can_only_be_narrowed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: str
) -> None:
    legacy = "Jane Doe <jane@example.com>"
    with monkeypatch.context() as m:  # a store written before the rule
        m.setattr("guard.rights._validate.subject_id_ok", lambda value: True)
        code, _, err = run(monkeypatch, capsys, "subject", "consent", legacy, "--purpose",
                           "marketing.third_party")
        assert (code, err) == (0, "")
    code, out, _ = run(monkeypatch, capsys, "subject", "show", legacy)
    assert code == 0
    assert "consent_granted" in out
    # Narrowing entries are taken: the consent can be withdrawn, the subject restricted.
    for args in (["consent", legacy, "--purpose", "marketing.third_party", "--withdraw"],
                 ["restrict", legacy], ["erase", legacy]):
        code, _, err = run(monkeypatch, capsys, "subject", *args)
        assert (code, err) == (0, ""), args
    # Widening entries are not.
    for args in (["consent", legacy, "--purpose", "marketing"], ["restrict", legacy, "--lift"],
                 ["erase", legacy, "--refuse", "--ref", "legal hold"]):
        code, _, err = run(monkeypatch, capsys, "subject", *args)
        assert code == 2, args
        assert "breaks the subject rule" in err
    assert [k for k, _ in entries(store)] == [
        "consent_granted", "consent_withdrawn", "restriction", "erasure_requested"]
    # A new subject with such an id gets nothing, not even a narrowing entry.
    code, _, err = run(monkeypatch, capsys, "subject", "restrict", "John Doe")
    assert code == 2
    assert "breaks the subject rule" in err


POLICY = load_policy()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=140),
                 st.text(alphabet="AZaz09-._~:@/ ;%", max_size=140)))
def test_the_register_rule_is_the_path_rule(subject: str) -> None:
    """A new subject's entry is taken exactly when the id could be a path parameter."""
    change = Change(subject, EntryKind.RESTRICTION)
    try:
        validate(POLICY, (), change)
    except RegisterRefusedError:
        taken = False
    else:
        taken = True
    assert taken == (subject_ok(subject, "/customers/{id}", "id") and bool(subject.strip()))
