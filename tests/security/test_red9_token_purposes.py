"""Ninth review: a token's ``purposes`` claim binds at the sidecar's APIs too.

A token may carry a ``purposes`` claim limiting the purposes its caller may declare
(docs/middleware.md); the proxy and the check endpoint refuse any other purpose
(``purpose_not_granted``, rule ``check:purpose_not_granted:token_purposes``). The
subject register API and ``/v1/decide`` never looked at it: a token ``svc:support``
had been given for order processing alone recorded an erasure, read a subject's rights
history and filtered subjects on ``rights.request``, and ``/v1/decide`` answered it
``allowed`` for any purpose the policy granted the caller. Each is now refused as
anywhere else, and the refusal is recorded (so is a verified asker the policy grants
no such action on ``rights.request``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any
           ) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("purposes")
    policy = policy_copy(tmp / "policy", POLICIES)
    with serve_sidecar(sidecar_settings(tmp, policy, keys.identity())) as server:
        yield server, tmp / "audit.db"


def _bearer(keys: Any, caller: str, purposes: list[str] | None) -> dict[str, str]:
    return {"authorization": f"Bearer {keys.mint('hs', sub=caller, purposes=purposes)}"}


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/subjects/entries", {"subject": "c-0042", "kind": "erasure_requested"}),
    ("/v1/subjects/lookup", {"subject": "c-0042"}),
    ("/v1/filter", {"caller": "svc:crm", "purpose": "relationship.management",
                    "categories": ["contact.email"], "subjects": ["c-0042"]}),
])
def test_a_token_limited_to_other_purposes_cannot_use_the_register_api(
    served: tuple[ServerThread, Path], keys: Any, path: str, body: dict[str, Any],
) -> None:
    server, db = served
    limited = _bearer(keys, "svc:support", ["order.processing"])
    answer = httpx.post(server.url + path, json=body, headers=limited, timeout=10)
    # Before: 201 (an erasure recorded and enforced) or 200.
    assert answer.status_code == 403, answer.text
    problem = answer.json()
    assert problem["reason"] == "purpose_not_granted"
    (row,) = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert (row["caller"], row["purpose"], row["reason"], row["http_route"]) == (
        "svc:support", "rights.request", "purpose_not_granted", path)
    lookup = httpx.post(server.url + "/v1/subjects/lookup", json={"subject": "c-0042"},
                        headers=_bearer(keys, "svc:support", None), timeout=10)
    assert lookup.json()["entries"] == []  # nothing was recorded


def test_a_token_with_the_purpose_still_uses_the_register_api(
    served: tuple[ServerThread, Path], keys: Any,
) -> None:
    server, _ = served
    allowed = _bearer(keys, "svc:support", ["rights"])  # a parent of rights.request
    answer = httpx.post(server.url + "/v1/subjects/lookup", json={"subject": "c-0007"},
                        headers=allowed, timeout=10)
    assert answer.status_code == 200, answer.text


def test_a_caller_without_the_grant_is_refused_and_recorded(
    served: tuple[ServerThread, Path], keys: Any,
) -> None:
    server, db = served
    answer = httpx.post(server.url + "/v1/subjects/lookup", json={"subject": "c-0042"},
                        headers=_bearer(keys, "svc:crm", None), timeout=10)
    assert answer.status_code == 403
    problem = answer.json()
    assert problem["reason"] == "rights_request_not_granted"
    (row,) = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert (row["caller"], row["reason"], row["rule"]) == (
        "svc:crm", "purpose_not_granted", '["check:purpose_not_granted:rights_request"]')


def test_decide_about_oneself_keeps_to_the_tokens_purposes(
    served: tuple[ServerThread, Path], keys: Any,
) -> None:
    server, db = served
    limited = _bearer(keys, "svc:crm", ["order.processing"])
    asked = {"purpose": "relationship.management", "categories": ["contact.email"]}
    answer = httpx.post(server.url + "/v1/decide", json=asked, headers=limited, timeout=10)
    assert answer.status_code == 200
    result = answer.json()
    # Before: allowed (the policy grants svc:crm relationship.management).
    assert result["decision"]["allowed"] is False
    assert result["decision"]["reason"] == "purpose_not_granted"
    (row,) = audit_rows(db, "event_id = ?", (result["decision_id"],))
    assert row["rule"] == '["check:purpose_not_granted:token_purposes"]'
    whole = httpx.post(server.url + "/v1/decide", json=asked, timeout=10,
                       headers=_bearer(keys, "svc:crm", ["relationship"]))
    assert whole.json()["decision"]["allowed"] is True


def test_a_register_look_up_is_an_audited_access(
    served: tuple[ServerThread, Path], keys: Any,
) -> None:
    """What the register holds about a person (objections, withdrawals, their references)
    is personal data: reading it is recorded like any access (before: no event)."""
    server, db = served
    answer = httpx.post(server.url + "/v1/subjects/lookup", json={"subject": "c-0099"},
                        headers=_bearer(keys, "svc:support", None), timeout=10)
    assert answer.status_code == 200
    pseudonym = answer.json()["subject"]
    rows = audit_rows(db, "subject = ? AND http_route = '/v1/subjects/lookup'", (pseudonym,))
    assert [(r["caller"], r["purpose"], r["allowed"], r["detail"]) for r in rows] == [
        ("svc:support", "rights.request", 1, "register_lookup")]


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/subjects/lookup"])
def test_an_api_request_without_a_caller_is_a_recorded_refusal(
    served: tuple[ServerThread, Path], path: str,
) -> None:
    """A 401 at the APIs left no trace; now it is recorded as every refusal proving no
    caller is (one by one up to the bound per source, then counted)."""
    server, db = served
    answer = httpx.post(server.url + path, json={"subject": "c-0001"}, timeout=10,
                        headers={"authorization": "Bearer not.a.token"})
    assert answer.status_code == 401
    (row,) = audit_rows(db, "event_id = ?", (answer.json()["decision_id"],))
    assert (row["caller"], row["reason"], row["http_route"], row["http_status"]) == (
        "", "unauthenticated", path, 401)


def test_filter_for_oneself_keeps_to_the_tokens_purposes(
    served: tuple[ServerThread, Path], keys: Any,
) -> None:
    """Filtering for itself, the asker declares the purpose, as at /v1/decide: a token for
    rights.request alone got svc:support's business.administration subjects, each
    recorded as its access for that purpose."""
    server, db = served
    asked = {"caller": "svc:support", "purpose": "business.administration",
             "categories": ["identity"], "subjects": ["c-0042"]}
    answer = httpx.post(server.url + "/v1/filter", json=asked, timeout=10,
                        headers=_bearer(keys, "svc:support", ["rights.request"]))
    assert answer.status_code == 403, answer.text  # before: 200, ["c-0042"]
    problem = answer.json()
    assert problem["reason"] == "purpose_not_granted"
    (row,) = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert (row["caller"], row["purpose"], row["rule"], row["http_route"]) == (
        "svc:support", "business.administration",
        '["check:purpose_not_granted:token_purposes"]', "/v1/filter")
    whole = httpx.post(server.url + "/v1/filter", json=asked, timeout=10, headers=_bearer(
        keys, "svc:support", ["rights.request", "business.administration"]))
    assert whole.json()["allowed"] == ["c-0042"]
