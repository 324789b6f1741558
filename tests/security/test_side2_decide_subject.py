"""Review of the subject ids the sidecar's APIs take: one rule, the one paths already follow.

``/v1/decide`` (and the register API: ``/v1/subjects/entries``, ``/lookup``,
``/v1/filter``) took any subject up to 200 characters: line breaks, escape
sequences, NUL, Unicode line separators. A subject is judged and audited (as its
pseudonym), so it must be one that can be read one way only, the same rule as
a subject taken from a path (docs/middleware.md, "Subject ids"): 1 to 128
characters from ``A-Z a-z 0-9 - . _ ~ : @``, not ``.`` or ``..``. Anything else
is a 400 problem+json ``malformed_request`` whose ``detail`` names the field,
and nothing of it is judged or recorded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings

from guard.audit import wait_indexed
from guard.config import AuditSettings
from middleware._bounds import subject_ok
from middleware.sidecar._decide_api import SubjectId

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MARKETING = {"purpose": "marketing.advertising", "categories": ["contact.email"]}
BAD = [
    "",
    "\n",
    "c-1\nINFO forged log line",
    "c-1\r\n",
    "\x00",
    "\x1b[31mred",
    "c-1\u2028x",
    "a b",
    "a,b",
    "c-0001;foo",
    "%41",
    "é",
    ".",
    "..",
    "x" * 129,
    "x" * 4096,
]
GOOD = ["c-1", "cust.7@example.org", "urn:x:42", "~a_b-c", "...", "x" * 128]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("side2-subject")
    policy = policy_copy(tmp / "policy", POLICIES)
    with serve_sidecar(sidecar_settings(tmp, policy, keys.identity())) as server:
        server.db = tmp / "audit.db"  # type: ignore[attr-defined]
        yield server


def _events(db: Path) -> int:
    wait_indexed(AuditSettings(store=f"sqlite:///{db}"))
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_event").fetchone()[0])


def _bodies(subject: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(caller, path, body) of every API that takes a subject, asking about ``subject``."""
    return [
        ("svc:marketing", "/v1/decide", {**MARKETING, "subject": subject}),
        ("svc:marketing", "/v1/decide", {"requests": [{**MARKETING, "subject": "c-1"},
                                                      {**MARKETING, "subject": subject}]}),
        ("svc:support", "/v1/subjects/entries", {"subject": subject, "kind": "restriction"}),
        ("svc:support", "/v1/subjects/lookup", {"subject": subject}),
        ("svc:support", "/v1/filter", {"caller": "svc:crm", "purpose": "relationship.management",
                                       "categories": ["identity"], "subjects": ["c-1", subject]}),
    ]


@pytest.mark.parametrize("subject", BAD)
def test_a_subject_outside_the_rule_is_refused_and_nothing_is_recorded(
    served: ServerThread, keys: Any, subject: str
) -> None:
    before = _events(served.db)  # type: ignore[attr-defined]
    for caller, path, body in _bodies(subject):
        resp = httpx.post(served.url + path, json=body,
                          headers={"authorization": f"Bearer {keys.mint('hs', sub=caller)}"})
        assert resp.status_code == 400, (path, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["reason"] == "malformed_request"
        assert "subject" in problem["detail"].split(":")[0], problem["detail"]
        assert "\n" not in resp.text
        assert len(resp.content) < 1024
    assert _events(served.db) == before  # type: ignore[attr-defined]


@pytest.mark.parametrize("subject", GOOD)
def test_a_subject_inside_the_rule_is_judged(served: ServerThread, keys: Any,
                                             subject: str) -> None:
    resp = httpx.post(served.url + "/v1/decide", json={**MARKETING, "subject": subject},
                      headers={"authorization": f"Bearer {keys.mint('hs', sub='svc:marketing')}"})
    assert resp.status_code == 200, resp.text


_ADAPTER = TypeAdapter(SubjectId)


@settings(max_examples=500, deadline=None)
@example(value=".")
@example(value="..")
@example(value="...")
@example(value="x" * 128)
@example(value="x" * 129)
@given(value=st.one_of(st.text(max_size=140),
                       st.text(alphabet="AZaz09-._~:@/;, %\n\x00é", max_size=140)))
def test_the_api_rule_is_the_path_rule(value: str) -> None:
    """A subject the APIs accept is exactly one a path parameter may hold."""
    try:
        _ADAPTER.validate_python(value)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == subject_ok(value, "/c/{id}", "id")
