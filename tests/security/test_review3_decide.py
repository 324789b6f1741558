"""Third review: a decision asked on another caller's behalf names who asked.

``POST /v1/decide`` lets a caller listed in ``sidecar.decide_askers`` ask about
any caller. Its event named only the caller asked about: the asker was handed
to the guard as the HTTP context's ``extra`` and dropped, so the trail of
``svc:support`` asking (and being told "allowed") about ``svc:crm``'s access
read as if ``svc:crm`` had asked itself. Such an event now carries ``detail``
``asker:<the API caller>``, as ``/v1/filter``'s do. A real uvicorn sidecar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("decide")
    policy = policy_copy(tmp / "policy", Path(__file__).resolve().parents[2] / "policies")
    settings = sidecar_settings(tmp, policy, keys.identity(), decide_askers=["svc:support"])
    with serve_sidecar(settings) as server:
        server.db = tmp / "audit.db"  # type: ignore[attr-defined]
        yield server


def _ask(served: ServerThread, keys: Any, asker: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {keys.mint('hs', sub=asker)}"}
    answer = httpx.post(f"{served.url}/v1/decide", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_decision_about_another_caller_names_the_asker(served: ServerThread, keys: Any) -> None:
    body = {"caller": "svc:crm", "purpose": "relationship.management",
            "categories": ["contact.email"]}
    one = _ask(served, keys, "svc:support", body)
    batch = _ask(served, keys, "svc:support", {"requests": [body, body]})
    ids = [one["decision_id"], *(r["decision_id"] for r in batch["results"])]
    for decision_id in ids:
        [row] = audit_rows(served.db, "event_id = ?", (decision_id,))  # type: ignore[attr-defined]
        assert (row["caller"], row["allowed"]) == ("svc:crm", 1)
        assert row["detail"] == "asker:svc:support"


def test_a_decision_about_oneself_is_as_before(served: ServerThread, keys: Any) -> None:
    body = {"purpose": "relationship.management", "categories": ["contact.email"]}
    one = _ask(served, keys, "svc:crm", body)
    [row] = audit_rows(served.db, "event_id = ?", (one["decision_id"],))  # type: ignore[attr-defined]
    assert (row["caller"], row["detail"]) == ("svc:crm", None)
