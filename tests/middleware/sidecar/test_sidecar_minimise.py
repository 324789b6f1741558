"""The sidecar minimises an upstream's JSON body on a routes.csv ``minimise`` route."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bench._pg import free_port
from guard._errors import PolicyError
from middleware.routes import parse_routes

SHIPPED = Path(__file__).resolve().parents[3] / "policies"
ROUTES = (
    "GET, /customers/{customer_id}/record, customer_id=public name=identity.name "
    "contact.email=contact.email cards[].number=financial.payment_card cards[].brand=public "
    "device=technical.device, read, customer_id, minimise\n"
    "GET, /customers/{customer_id}/text, name=identity.name, read, customer_id, minimise\n"
)
RECORD = {"customer_id": "c-1", "name": "Ann", "contact": {"email": "ann@example.com"},
          "cards": [{"number": "4111", "brand": "visa"}], "device": "ios"}


async def record(request: Request) -> JSONResponse:
    return JSONResponse(RECORD)


async def text(request: Request) -> PlainTextResponse:
    return PlainTextResponse("name: Ann")


def test_routes_csv_field_paths_and_mode() -> None:
    (rule, _) = parse_routes(ROUTES)
    assert rule.mode == "minimise"
    assert rule.categories == ("identity.name", "contact.email", "financial.payment_card",
                               "technical.device")
    assert rule.fields is not None
    assert rule.fields.paths() == {"name": "identity.name", "contact.email": "contact.email",
                                   "cards.number": "financial.payment_card",
                                   "device": "technical.device"}
    with pytest.raises(PolicyError, match="maps JSON field paths"):
        parse_routes("GET, /a, contact, read, , minimise\n")
    with pytest.raises(PolicyError, match="mode must be"):
        parse_routes("GET, /a, a=contact, read, , mask\n")
    with pytest.raises(PolicyError, match="not a field path and a category"):
        parse_routes("GET, /a, a=Contact, read\n")


def test_the_sidecar_filters_the_upstreams_json(tmp_path: Path, keys: Any) -> None:
    policy = policy_copy(tmp_path / "policy", SHIPPED, routes=ROUTES)
    upstream_app = Starlette(routes=[Route("/customers/{customer_id}/record", record),
                                     Route("/customers/{customer_id}/text", text)])
    with ServerThread(upstream_app, free_port()) as upstream:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream.url)
        with serve_sidecar(settings) as sidecar:
            def get(path: str, caller: str, purpose: str) -> httpx.Response:
                return httpx.get(sidecar.url + path, timeout=10, headers={
                    "authorization": f"Bearer {keys.mint(sub=caller)}", "x-purpose": purpose})

            payments = get("/customers/c-1/record", "proc:payments",
                           "order.processing.payments")
            assert payments.status_code == 200, payments.text
            assert payments.json() == {"customer_id": "c-1", "name": "Ann", "contact": {},
                                       "cards": [{"number": "4111", "brand": "visa"}]}
            crm = get("/customers/c-1/record", "svc:crm", "relationship.management")
            assert crm.status_code == 200, crm.text
            assert crm.json() == {"customer_id": "c-1", "name": "Ann",
                                  "contact": {"email": "ann@example.com"},
                                  "cards": [{"brand": "visa"}]}
            # The check endpoint never sees the body: a minimise route is judged whole.
            check = httpx.get(sidecar.url + "/v1/check", timeout=10, headers={
                "authorization": f"Bearer {keys.mint(sub='svc:crm')}",
                "x-purpose": "relationship.management",
                "x-original-uri": "/customers/c-1/record", "x-original-method": "GET"})
            assert check.status_code == 403
            assert check.json()["reason"] == "category_not_in_purpose"
            refused = get("/customers/c-1/text", "svc:crm", "relationship.management")
            assert refused.status_code == 403
            assert "Ann" not in refused.text
    (row,) = audit_rows(tmp_path / "audit.db",
                        "kind = 'decision' AND caller = 'svc:crm' AND http_route = ? "
                        "AND detail IS NOT NULL",
                        ("/customers/{customer_id}/record",))
    assert json.loads(row["detail"])["withheld"] == {
        "financial.payment_card": "category_not_in_purpose",
        "technical.device": "category_not_in_purpose"}
    # A read is one record: the decision with the status the client was answered with.
    rows = audit_rows(tmp_path / "audit.db", "http_route = ?", ("/customers/{customer_id}/text",))
    assert [(r["kind"], r["allowed"], r["http_status"]) for r in rows] == [("decision", 1, 403)]


def test_lint_checks_the_category_of_each_field_path(tmp_path: Path) -> None:
    from guard.policy import lint_policy

    policy = policy_copy(tmp_path / "policy", SHIPPED)
    line = "GET, /r, name=identity.name email=contact.fax, read, , minimise\n"
    (policy / "routes.csv").write_text(line)
    findings = [f for f in lint_policy(policy, policy / "routes.csv")
                if f.code.startswith("route-")]
    assert [(f.code, f.column) for f in findings] == [
        ("route-unknown-category", line.index("contact.fax") + 1)]
    assert "'contact.fax'" in findings[0].message
