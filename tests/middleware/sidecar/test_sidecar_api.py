"""The sidecar's own endpoints under real uvicorn: decision API, check endpoint, health, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.openapi.models import OpenAPI
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings

from middleware.sidecar import DecideBatchResult, DecideResult


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("api")
    policy = policy_copy(tmp / "policy", Path(__file__).resolve().parents[3] / "policies")
    settings = sidecar_settings(tmp, policy, keys.identity(), decide_askers=["svc:support"])
    with serve_sidecar(settings) as server:
        server.db = tmp / "audit.db"  # type: ignore[attr-defined]
        yield server


def _auth(keys: Any, caller: str, purpose: str | None = None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {keys.mint('hs', sub=caller)}"}
    if purpose:
        headers["x-purpose"] = purpose
    return headers


def test_decide_one_request_about_itself(served: ServerThread, keys: Any) -> None:
    body = {"purpose": "relationship.management", "categories": ["contact.email"]}
    resp = httpx.post(f"{served.url}/v1/decide", json=body, headers=_auth(keys, "svc:crm"))
    assert resp.status_code == 200
    result = DecideResult.model_validate(resp.json())
    assert result.decision.allowed
    assert result.decision.caller == "svc:crm"
    assert result.decision.reason == "allowed"
    rows = audit_rows(served.db, "event_id = ?", (result.decision_id,))  # type: ignore[attr-defined]
    assert [(r["kind"], r["caller"], r["allowed"]) for r in rows] == [("decision", "svc:crm", 1)]


def test_decide_a_batch_in_order(served: ServerThread, keys: Any) -> None:
    body = {
        "requests": [
            {"purpose": "analytics.improvement", "categories": ["usage"]},
            {"purpose": "analytics.improvement", "categories": ["identity"]},
            {"purpose": "analytics.improvement", "categories": ["special.health"]},
        ]
    }
    resp = httpx.post(f"{served.url}/v1/decide", json=body, headers=_auth(keys, "svc:analytics"))
    assert resp.status_code == 200
    results = DecideBatchResult.model_validate(resp.json()).results
    assert [r.decision.reason for r in results] == [
        "allowed",
        "category_not_in_purpose",
        "special_category",
    ]
    assert len({r.decision_id for r in results}) == 3


def test_asking_about_another_caller_needs_permission(served: ServerThread, keys: Any) -> None:
    body = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ["contact"]}
    refused = httpx.post(f"{served.url}/v1/decide", json=body, headers=_auth(keys, "svc:web"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "asker_not_permitted"
    allowed = httpx.post(f"{served.url}/v1/decide", json=body, headers=_auth(keys, "svc:support"))
    assert allowed.status_code == 200
    assert allowed.json()["decision"]["caller"] == "svc:crm"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b'{"purpose": "x"}', "categories"),
        (b'{"purpose": "x", "categories": []}', "categories"),
        (b'{"purpose": "x", "categories": ["a"], "action": "delete"}', "action"),
        (b'{"purpose": "x", "categories": ["a"], "extra": 1}', "extra"),
        (b'{"requests": []}', "requests"),
    ],
)
def test_malformed_decide_body_is_a_clear_400(
    served: ServerThread, keys: Any, body: bytes, fragment: str
) -> None:
    headers = {**_auth(keys, "svc:crm"), "content-type": "application/json"}
    resp = httpx.post(f"{served.url}/v1/decide", content=body, headers=headers)
    assert resp.status_code == 400
    problem = resp.json()
    assert problem["reason"] == "malformed_request"
    assert fragment in problem["detail"]


def test_decide_needs_a_proven_caller(served: ServerThread) -> None:
    body = {"purpose": "relationship.management", "categories": ["contact"]}
    resp = httpx.post(f"{served.url}/v1/decide", json=body)
    assert resp.status_code == 401
    assert resp.json()["reason"] == "unauthenticated"
    forged = httpx.post(
        f"{served.url}/v1/decide", json=body, headers={"authorization": "Bearer not.a.token"}
    )
    assert forged.status_code == 401


def test_check_nginx_style(served: ServerThread, keys: Any) -> None:
    headers = {
        **_auth(keys, "svc:crm", "relationship.management"),
        "x-original-uri": "/customers/42?fields=all",
        "x-original-method": "GET",
    }
    ok = httpx.get(f"{served.url}/v1/check", headers=headers)
    assert ok.status_code == 200
    assert ok.headers["x-guard-caller"] == "svc:crm"
    assert ok.headers["x-guard-purpose"] == "relationship.management"
    rows = audit_rows(served.db, "event_id = ?", (ok.headers["x-guard-decision-id"],))  # type: ignore[attr-defined]
    assert rows[0]["http_route"] == "/customers/{customer_id}"
    assert rows[0]["subject"] not in (None, "42")  # pseudonymised, never the raw id
    put = httpx.get(f"{served.url}/v1/check", headers={**headers, "x-original-method": "PUT"})
    assert put.status_code == 403
    assert put.json()["reason"] == "route_not_declared"


def test_check_envoy_style_appends_the_original_path(served: ServerThread, keys: Any) -> None:
    headers = _auth(keys, "svc:analytics", "analytics.improvement")
    denied = httpx.get(f"{served.url}/v1/check/customers/42", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["reason"] == "category_not_in_purpose"
    assert denied.headers["x-guard-decision-id"]
    nobody = httpx.get(f"{served.url}/v1/check/customers/42")
    assert nobody.status_code == 401
    public = httpx.get(f"{served.url}/v1/check/public/logo.png")
    assert public.status_code == 200


@pytest.mark.parametrize(
    "uri", ["/public/../customers/42", "/public/%2e%2e/customers/42", "/public%2f..%2fcustomers/1"]
)
def test_check_refuses_ambiguous_paths(served: ServerThread, uri: str) -> None:
    resp = httpx.get(f"{served.url}/v1/check", headers={"x-original-uri": uri})
    assert resp.status_code == 400
    assert resp.json()["reason"] == "malformed_request"


def test_check_without_original_request_is_400(served: ServerThread) -> None:
    resp = httpx.get(f"{served.url}/v1/check")
    assert resp.status_code == 400


def test_health_and_readiness_show_the_policy_version(served: ServerThread) -> None:
    alive = httpx.get(f"{served.url}/healthz").json()
    ready = httpx.get(f"{served.url}/readyz")
    assert ready.status_code == 200
    assert alive["policy_version"].startswith("sha256:")
    assert ready.json()["policy_version"] == alive["policy_version"]
    assert ready.json()["audit"]["ok"] is True
    assert ready.json()["last_reload_error"] is None


def test_openapi_document_is_valid_and_complete(served: ServerThread) -> None:
    doc = httpx.get(f"{served.url}/openapi.json").json()
    model = OpenAPI.model_validate(doc)
    assert model.openapi == "3.1.0"
    assert set(doc["paths"]) == {
        "/v1/decide",
        "/v1/check",
        "/v1/check/{original_path}",
        "/healthz",
        "/readyz",
        "/v1/subjects/entries",  # the subject register API (test_sidecar_subjects.py)
        "/v1/subjects/lookup",
        "/v1/filter",
    }
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


class _BrokenRoutes:
    """A route table that fails, standing in for any unexpected error on the hot path."""

    def match(self, method: str, path: str) -> None:
        raise RuntimeError("boom")


def test_an_internal_error_on_the_check_path_is_a_500_problem(tmp_path: Path, keys: Any) -> None:
    import asyncio

    from middleware.sidecar import build_sidecar, create_app

    policy = policy_copy(tmp_path / "policy", Path(__file__).resolve().parents[3] / "policies")
    sidecar = build_sidecar(sidecar_settings(tmp_path, policy, keys.identity()))
    sidecar.routes = _BrokenRoutes()  # type: ignore[assignment]
    app = create_app(sidecar=sidecar)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            return await client.get(
                "/v1/check", headers={"x-original-uri": "/customers/1", **_auth(keys, "svc:crm")}
            )

    try:
        resp = asyncio.run(ask())
    finally:
        sidecar.guard.close()
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["reason"] == "internal_error"
