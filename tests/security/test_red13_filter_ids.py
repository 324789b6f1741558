"""Thirteenth review: ``guard subject filter`` never hands back an objecting subject's id.

The bulk filter reads subject ids from standard input and prints those a request may use.
An id it read was judged as it came: ``c-0042`` with a trailing space, a leading tab or
the byte-order mark a spreadsheet's export puts first is no id the register knows, so an
objecting subject came back allowed under that spelling, and a bulk job that strips it
(most CSV readers and shell tools do) mailed the person who objected. An id outside the
subject rule is now left out, with a warning naming its line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Guard
from guard._subject_rule import subject_id_ok
from guard._types import Request
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import Register
from guard.rights._filter import filter_subjects
from tests.guard.audit.conftest import keys_at, make_trail
from tests.security import clikit

SUBJECT = "c-0042"
FILTER = ["subject", "filter", "--caller", "svc:marketing", "--purpose",
          "marketing.advertising", "--category", "contact.email"]




def test_an_objecting_subject_spelled_otherwise_is_never_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(policy_dir.parent)
    clikit.cli_store(tmp_path, monkeypatch)
    code, out, err = clikit.run(monkeypatch, capsys, "subject", "object", SUBJECT,
                                "--purpose", "marketing", "--ref", "T-1", stdin=b"")
    assert code == 0, err
    code, out, err = clikit.run(monkeypatch, capsys, *FILTER, stdin=(
        b"\xef\xbb\xbfc-0042\nc-0042 \n\tc-0042\nc-0042\r\nc-0043\n"))
    assert code == 0, err
    # Before: "\ufeffc-0042", "c-0042 " and "\tc-0042" were printed.
    assert out.splitlines() == ["c-0043"]
    assert [n for n in (1, 2, 3) if f"line {n}:" in err] == [1, 2, 3]


KEY = b"k" * 32
POLICY = load_policy(None)


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    tmp = tmp_path_factory.mktemp("filter-ids")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=KEY, journal=tmp / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY,
               register=Register(KEY)) as made:
        yield made


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=20))
def test_only_ids_under_the_subject_rule_are_ever_yielded(guard: Guard, subject: str) -> None:
    template = Request("svc:crm", "relationship.management", ("identity.name",))
    got = list(filter_subjects(guard, template, [subject], batch_id="b", asker="test"))
    assert got == ([subject] if subject_id_ok(subject) else [])
