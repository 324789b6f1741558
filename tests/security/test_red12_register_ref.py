"""A register entry's reference is one line of text, or the entry is refused (twelfth review).

The register records an entry's audit event first, then stores the entry. The reference
(``ref``, free text: a ticket, the legal reason, often a data subject's own words passed on
by the rights-request system) was taken as it came: PostgreSQL refuses a NUL character in
text, so the store raised after the event was durable. The API answered 503 and the trail
held a ``subject_right`` event for an entry the register never had: the subject's access
report shows an objection the guard does not enforce (``guard subject`` did the same with
an argument that is not UTF-8, on SQLite too). Control, format (a right-to-left override)
and line-break characters went into the register as they came. A reference that is not
one line of printable text is refused now, before anything is recorded: 422
``register_refused``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sidecarkit import policy_copy, serve_sidecar, sidecar_settings

from guard.audit import wait_indexed
from guard.audit._store import open_store
from guard.policy import load_policy
from guard.rights import EntryKind, RegisterRefusedError
from guard.rights._validate import Change, validate

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BAD = ["ticket \ud800", "reason\x00", "line one\nline two", "\x1b[2Kquiet", "abc\u202egnp.exe"]


def test_a_reference_that_is_no_line_of_text_is_refused_unrecorded(
        tmp_path: Path, keys: Any, store_url: str) -> None:
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                keys.identity())
    settings.audit.store = store_url
    support = {"authorization": f"Bearer {keys.mint('hs', sub='svc:support')}"}
    with serve_sidecar(settings) as server:
        for number, ref in enumerate(BAD):
            entry = {"subject": f"c-07{number}", "kind": "objection",
                     "purpose": "marketing", "ref": ref}
            answer = httpx.post(server.url + "/v1/subjects/entries",  # "\ud800" escaped
                                content=json.dumps(entry).encode(), timeout=10,
                                headers={**support, "content-type": "application/json"})
            # Before: 201, or 503 on PostgreSQL for the NUL with its event durable.
            assert answer.status_code in (400, 422), (ref, answer.status_code, answer.text)
            assert answer.json()["reason"] in ("register_refused", "malformed_request")
        good = {"subject": "c-0800", "kind": "objection", "purpose": "marketing",
                "ref": "ticket 12 — Art. 21(2)"}
        answer = httpx.post(server.url + "/v1/subjects/entries", json=good, headers=support,
                            timeout=10)
        assert answer.status_code == 201, answer.text
    wait_indexed(settings.audit)
    with contextlib.closing(open_store(store_url)) as store:
        rows = store.rows("SELECT reason FROM audit_event WHERE kind = 'subject_right'")
    assert [tuple(row) for row in rows] == [("objection",)]  # the good entry's alone


@given(st.text(max_size=40))
def test_a_reference_is_kept_exactly_when_it_is_printable_text(ref: str) -> None:
    policy = load_policy(POLICIES)
    change = Change("c-1", EntryKind.RESTRICTION, ref=ref)
    if ref.isprintable():
        validate(policy, (), change)
    else:
        with pytest.raises(RegisterRefusedError, match="reference"):
            validate(policy, (), change)
