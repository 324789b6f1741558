"""Tenth review: a question about another caller that ``/v1/decide`` refuses is recorded.

``POST /v1/decide`` answers a caller about itself, and about other callers only when
it is one of ``sidecar.decide_askers``. Any other verified caller asking about another
was refused 403 ``asker_not_permitted`` and nothing was recorded: it could ask, about
any subject, which caller may read what, and neither the audit trail nor the subject's
access report showed it had tried (the ninth review recorded the register API's such
refusals; this one was left). The refusal is now an event naming the asker, the purpose,
categories and subject it asked about, and the caller it asked about.
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
    tmp = tmp_path_factory.mktemp("decide")
    with serve_sidecar(sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES),
                                        keys.identity())) as server:
        yield server, tmp / "audit.db"


def test_asking_about_another_caller_without_leave_is_a_recorded_refusal(
        served: tuple[ServerThread, Path], keys: Any) -> None:
    server, db = served
    token = keys.mint("hs", sub="svc:crm")
    asked = {"requests": [
        {"purpose": "relationship.management", "categories": ["contact.email"]},
        {"caller": "svc:billing", "purpose": "order.processing",
         "categories": ["financial.payment_card"], "subject": "c-0077"},
    ]}
    answer = httpx.post(server.url + "/v1/decide", json=asked, timeout=10,
                        headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 403, answer.text
    problem = answer.json()
    assert problem["reason"] == "asker_not_permitted"
    assert problem.get("decision_id"), problem  # before: no id, and no event
    (row,) = audit_rows(db, "event_id = ?", (problem["decision_id"],))
    assert (row["caller"], row["purpose"], row["reason"], row["http_route"],
            row["http_status"]) == ("svc:crm", "order.processing", "purpose_not_granted",
                                    "/v1/decide", 403)
    assert row["rule"] == '["check:purpose_not_granted:decide_askers"]'
    assert row["detail"] == "about:svc:billing"
    assert row["subject"]  # the subject's pseudonym: the attempt is in its report
    assert "c-0077" not in str(row)
    # nothing of the batch was judged: the question about itself was not answered either
    assert not audit_rows(db, "caller = ? AND purpose = ?",
                          ("svc:crm", "relationship.management"))
