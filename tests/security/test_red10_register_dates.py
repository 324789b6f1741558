"""Tenth review: a register entry is in force from the day it names, or names no day.

The register API takes an ``effective`` date, documented for an end of relationship,
and took it for every kind of entry; the guard enforces every entry but an end of
relationship from the moment it is recorded. A consent to ``marketing.third_party``
recorded ``"effective": "2099-01-01"`` (a campaign's start, or a typo) was in force at
once: ``svc:marketing`` was allowed the subject's email for a purpose whose only basis
is consent, and the decision named a consent dated 2099 as its rule (POLICY-SPEC §4: an
entry dated in the future takes effect on that date). A past date wrote a consent, or a
lifted restriction, into the history as older than it is. Only an end of relationship
takes a date now; any other entry with one is refused (422 ``register_refused``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings

from guard.policy import load_policy
from guard.rights import EntryKind, RegisterRefusedError
from guard.rights._validate import Change, validate

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ASK = {"purpose": "marketing.third_party", "categories": ["contact.email"]}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("dates")
    with serve_sidecar(sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES),
                                        keys.identity())) as server:
        yield server


def _bearer(keys: Any, caller: str) -> dict[str, str]:
    return {"authorization": f"Bearer {keys.mint('hs', sub=caller)}"}


def _reason(server: ServerThread, keys: Any, subject: str) -> str:
    answer = httpx.post(server.url + "/v1/decide", json={**ASK, "subject": subject},
                        headers=_bearer(keys, "svc:marketing"), timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["decision"]["reason"])


def test_a_consent_dated_in_the_future_is_not_in_force_today(
        served: ServerThread, keys: Any) -> None:
    entry = {"subject": "c-0099", "kind": "consent_granted", "purpose": "marketing.third_party",
             "effective": "2099-01-01", "ref": "campaign 2099"}
    answer = httpx.post(served.url + "/v1/subjects/entries", json=entry,
                        headers=_bearer(keys, "svc:support"), timeout=10)
    # Before: 201, and the next decision was allowed on a consent dated 2099.
    assert answer.status_code == 422, answer.text
    assert answer.json()["reason"] == "register_refused"
    assert "takes effect when it is recorded" in answer.json()["detail"]
    assert _reason(served, keys, "c-0099") == "consent_required"


def test_a_consent_without_a_date_and_an_end_with_one_are_recorded(
        served: ServerThread, keys: Any) -> None:
    support = _bearer(keys, "svc:support")
    consent = {"subject": "c-0100", "kind": "consent_granted",
               "purpose": "marketing.third_party", "ref": "form 12"}
    answer = httpx.post(served.url + "/v1/subjects/entries", json=consent, headers=support,
                        timeout=10)
    assert answer.status_code == 201, answer.text
    assert _reason(served, keys, "c-0100") == "allowed"
    end = {"subject": "c-0100", "kind": "end_of_relationship", "effective": "2099-01-01"}
    answer = httpx.post(served.url + "/v1/subjects/entries", json=end, headers=support,
                        timeout=10)
    assert answer.status_code == 201, answer.text
    assert _reason(served, keys, "c-0100") == "allowed"  # the end is in 2099


POLICY = load_policy(POLICIES)


@settings(max_examples=100, deadline=None)
@given(kind=st.sampled_from([k for k in EntryKind if k is not EntryKind.END_OF_RELATIONSHIP]),
       day=st.dates(date(1900, 1, 1), date(9999, 12, 31)))
def test_no_entry_but_an_end_of_relationship_takes_a_date(kind: EntryKind, day: date) -> None:
    purpose = "analytics.improvement" if kind.names_purpose else ""
    with pytest.raises(RegisterRefusedError, match="takes effect when it is recorded"):
        validate(POLICY, (), Change("c-1", kind, purpose, day, "ref", "cli:test"))
