"""Minimising routes: each caller gets the fields of its released categories, audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel
from tokenkit import Keys, audit_rows, guard_settings

from examples.customers import create_app
from guard._errors import PolicyError
from guard._guard import Guard
from middleware import Category, GuardMiddleware, RouteTable, guarded

pytestmark = pytest.mark.anyio

ALL_FIELDS = {"customer_id", "name", "date_of_birth", "contact", "payment_card", "interests",
              "communication_preferences", "pages_visited", "device"}
CONTACT = {"email", "phone", "billing_address", "delivery_address"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("minimise")
    settings = guard_settings(base, keys)
    guard = Guard.from_settings(settings)
    yield {"app": create_app(settings, guard=guard), "guard": guard, "db": base / "audit.db",
           "keys": keys, "settings": settings}
    guard.close()


@pytest.fixture
async def client(env: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


async def fetch(client: httpx.AsyncClient, keys: Keys, caller: str, purpose: str,
                path: str = "/customers/c-0001/record") -> httpx.Response:
    token = keys.mint(sub=caller)
    return await client.get(path, headers={"authorization": f"Bearer {token}",
                                           "x-purpose": purpose})


async def start(app: FastAPI) -> list[str]:
    """Start and stop ``app`` as a server does (its lifespan); the message types it sent.

    A start-up the guard refuses raises its error here, as it stops the server.
    """
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


async def started(app: FastAPI) -> httpx.AsyncClient:
    """A client over ASGI to ``app``, once its start-up has passed."""
    assert await start(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


def detail(db: Path, decision_id: str) -> dict[str, Any]:
    (row,) = audit_rows(db, "event_id = ?", (decision_id,))
    out: dict[str, Any] = json.loads(row["detail"])
    out["allowed"] = row["allowed"]
    out["reason"] = row["reason"]
    return out


async def test_three_callers_get_three_different_records(
    client: httpx.AsyncClient, env: dict[str, Any]
) -> None:
    keys, db = env["keys"], env["db"]
    crm = await fetch(client, keys, "svc:crm", "relationship.management")
    assert crm.status_code == 200, crm.text
    body = crm.json()
    assert set(body) == ALL_FIELDS - {"pages_visited", "device"}
    assert body["payment_card"] is None  # masked with null, not removed
    assert set(body["contact"]) == CONTACT
    audit = detail(db, crm.headers["x-guard-decision-id"])
    assert audit["withheld"] == {"financial.payment_card": "category_not_in_purpose",
                                 "usage.website": "category_not_in_purpose",
                                 "technical.device": "category_not_in_purpose"}
    assert "contact.email" in audit["released"]
    assert int(crm.headers["content-length"]) == len(crm.content)

    marketing = await fetch(client, keys, "svc:marketing", "marketing.advertising")
    assert marketing.status_code == 200, marketing.text
    body = marketing.json()
    assert set(body) == ALL_FIELDS - {"device"}
    assert body["payment_card"] is None
    assert body["pages_visited"]
    audit = detail(db, marketing.headers["x-guard-decision-id"])
    assert audit["withheld"] == {"financial.payment_card": "category_not_in_purpose",
                                 "technical.device": "category_not_granted"}

    payments = await fetch(client, keys, "proc:payments", "order.processing.payments")
    assert payments.status_code == 200, payments.text
    body = payments.json()
    assert body == {"customer_id": "c-0001", "name": "Customer 1",
                    "contact": {"billing_address": "1 High Street, London"},
                    "payment_card": "**** **** **** 1001"}
    audit = detail(db, payments.headers["x-guard-decision-id"])
    assert audit["released"] == ["identity.name", "contact.billing_address",
                                 "financial.payment_card"]
    assert audit["withheld"]["contact.email"] == "category_not_granted"
    assert audit["withheld"]["technical.device"] == "category_not_in_purpose"
    assert audit["allowed"] == 1


async def test_refused_when_no_personal_category_is_released(
    client: httpx.AsyncClient, env: dict[str, Any]
) -> None:
    # analytics: technical and usage only: the pages visited and the device.
    ok = await fetch(client, env["keys"], "svc:analytics", "analytics.improvement")
    assert ok.status_code == 200
    body = ok.json()
    assert body == {"customer_id": "c-0001", "contact": {}, "payment_card": None,
                    "pages_visited": body["pages_visited"], "device": body["device"]}
    # svc:auth: identity.username and technical.login only: nothing of the record.
    refused = await fetch(client, env["keys"], "svc:auth", "business.administration")
    assert refused.status_code == 403
    assert refused.json()["reason"] == "category_not_granted"
    audit = detail(env["db"], refused.json()["decision_id"])
    assert audit["released"] == []
    assert audit["allowed"] == 0


def _app(env: dict[str, Any], model: Any, body: Any, **declare: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/thing", response_model=model)
    @guarded(**declare)
    async def thing() -> Any:
        return body

    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()), max_minimised_body=256)
    return app


class Person(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email: Annotated[str, Category("contact.email")]


async def test_declared_categories_that_disagree_with_the_model_stop_the_start(
    env: dict[str, Any]
) -> None:
    app = _app(env, Person, {}, categories=["identity"], mode="minimise")
    with pytest.raises(PolicyError, match="disagree with the response model"):
        await start(app)


async def test_minimise_needs_a_model_with_categories(env: dict[str, Any]) -> None:
    app = _app(env, dict[str, str], {}, mode="minimise")
    with pytest.raises(PolicyError, match="no field with a Category"):
        await start(app)
    with pytest.raises(PolicyError, match="mode must be"):
        guarded(categories=["contact"], mode="mask")


async def test_agreeing_declaration_and_derived_categories(env: dict[str, Any]) -> None:
    app = _app(env, Person, {"name": "n", "email": "e"},
               categories=["contact.email", "identity.name"])
    async with await started(app) as client:
        token = env["keys"].mint(sub="proc:mailer")
        # deny mode: proc:mailer holds identity.name and contact.email under advertising,
        # but is in the US with idta: allowed whole.
        got = await client.get("/thing", headers={"authorization": f"Bearer {token}",
                                             "x-purpose": "marketing.advertising"})
        assert got.status_code == 200
        assert got.json() == {"name": "n", "email": "e"}


@pytest.mark.parametrize(("response", "why"), [
    (PlainTextResponse("name: n"), "not JSON"),
    (Response(b'{"name": "' + b"n" * 300 + b'"}', media_type="application/json"), "too big"),
    (Response(b"{not json", media_type="application/json"), "bad JSON"),
])
async def test_a_body_that_cannot_be_filtered_is_refused(
    env: dict[str, Any], response: Response, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}", response_model=Person)
    @guarded(mode="minimise")
    async def thing(thing_id: str) -> Response:
        return response

    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()), max_minimised_body=256)
    token = env["keys"].mint(sub="svc:crm")
    async with await started(app) as client:
        got = await client.get("/things/c-0042", headers={"authorization": f"Bearer {token}",
                                                     "x-purpose": "relationship.management"})
    assert got.status_code == 403, why
    assert "/things/{thing_id}" in caplog.text
    assert "c-0042" not in caplog.text  # the log names the template, never the raw path
    assert got.json()["reason"] == "internal_error"
    assert b"name" not in got.content.replace(b'"name"', b"")
    assert got.headers.get_list("x-guard-decision-id") == [got.json()["decision_id"]]


def test_openapi_names_each_fields_category_and_how_it_is_withheld() -> None:
    schemas = create_app(enforce=False).openapi()["components"]["schemas"]
    record = schemas["CustomerRecord"]["properties"]
    assert record["payment_card"]["x-data-category"] == "financial.payment_card"
    assert record["payment_card"]["x-withheld"] == "masked"
    assert "replaced by null" in record["payment_card"]["description"]
    assert "customer_id" in record
    assert "x-data-category" not in record["customer_id"]
    email = schemas["ContactDetails"]["properties"]["email"]
    assert email["x-data-category"] == "contact.email"
    assert email["x-withheld"] == "removed"
    assert "left out" in email["description"]
