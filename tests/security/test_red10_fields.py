"""Tenth review: a response model that holds itself, or names a model defined after it,
is judged and minimised at every level.

The field plan of a response model followed each model once: a reference back to a
model already being planned (``emergency_contact: Person | None``, ``household:
list[Person]``, ``Order.customer`` inside ``Customer.orders``) was not followed, so
the categorised fields of the nested objects were in no plan and passed the
minimiser as they came: a caller released ``identity.name`` but not ``contact.email``
got every nested person's email. A field whose type is a model defined after its own
(a forward reference Pydantic had not resolved yet) was in no plan either: its
categories were not even judged on a ``deny`` route. Served here by a real uvicorn to
such a caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter
from tokenkit import guard_settings

from guard._errors import PolicyError
from middleware import Category, GuardMiddleware, guarded
from middleware.fields import MAX_NESTING, plan_for
from tests.security.test_red4_fields import CALLER, PURPOSE, served

NAME = Annotated[str, Category("identity.name")]
EMAIL = Annotated[str, Category("contact.email")]


class Person(BaseModel):
    id: str
    name: NAME
    email: EMAIL
    emergency_contact: Person | None = None
    household: list[Person] = []


class Order(BaseModel):
    number: str
    customer: Customer | None = None


class Customer(BaseModel):
    name: NAME
    email: EMAIL
    orders: list[Order] = []


class Account(BaseModel):  # names a model defined after it (an unresolved forward reference)
    name: NAME
    profile: Profile


class Profile(BaseModel):
    email: EMAIL


class Node(BaseModel):  # holds itself, carries no category
    label: str
    children: list[Node] = []


def person(depth: int, tag: str = "p") -> Person:
    """A chain of ``depth`` emergency contacts, each with one household member."""
    inner = person(depth - 1, tag + "e") if depth > 1 else None
    member = Person(id=tag + "h", name=f"name-{tag}h", email=f"{tag}h@example.com")
    return Person(id=tag, name=f"name-{tag}", email=f"{tag}@example.com",
                  emergency_contact=inner, household=[member])


def customer() -> Customer:
    inner = Customer(name="name-inner", email="inner@example.com")
    return Customer(name="name-outer", email="outer@example.com",
                    orders=[Order(number="o-1", customer=inner)])


def app(settings_: Any) -> FastAPI:
    api = FastAPI()

    @api.get("/people/{customer_id}", response_model=Person)
    @guarded(subject="customer_id", mode="minimise")
    async def people(customer_id: str) -> Any:
        return person(3)

    @api.get("/customers/{customer_id}", response_model=Customer)
    @guarded(subject="customer_id", mode="minimise")
    async def customers(customer_id: str) -> Any:
        return customer()

    @api.get("/accounts/{customer_id}", response_model=Account)
    @guarded(subject="customer_id")  # deny: the categories are the model's
    async def accounts(customer_id: str) -> Any:
        return Account(name="name-a", profile=Profile(email="a@example.com"))

    @api.get("/nodes/{customer_id}", response_model=Node)
    @guarded(subject="customer_id", categories=["identity.name"])
    async def nodes(customer_id: str) -> Any:
        return Node(label="a", children=[Node(label="b")])

    api.add_middleware(GuardMiddleware, settings=settings_)
    return api


def answers(tmp_path: Path, keys: Any, *paths: str) -> list[httpx.Response]:
    """``GET`` each path of :func:`app` under a real uvicorn, as a caller released
    ``identity.name`` but not ``contact.email``."""
    token = keys.mint(sub=CALLER)
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}

    def calls(base: str) -> list[httpx.Response]:
        return [httpx.get(base + path, headers=headers, timeout=10) for path in paths]

    got = served(app(guard_settings(tmp_path, keys)), calls)  # type: ignore[arg-type]
    assert got is not None, "the app refused to start"
    return got  # type: ignore[return-value]


def test_a_nested_object_of_a_model_that_holds_itself_is_minimised_too(
        tmp_path: Path, keys: Any) -> None:
    people, customers, nodes = answers(tmp_path, keys, "/people/c-1", "/customers/c-1",
                                       "/nodes/c-1")
    assert people.status_code == 200, people.text
    assert "@example.com" not in people.text, people.text
    assert people.text.count("name-") == 6, people.text  # 3 people, 3 household members
    assert customers.status_code == 200, customers.text
    assert "@example.com" not in customers.text, customers.text
    assert "name-inner" in customers.text
    assert nodes.status_code == 200, nodes.text  # a deny route of a model with no category
    assert nodes.json() == {"label": "a", "children": [{"label": "b", "children": []}]}


def test_a_field_whose_model_is_defined_after_its_own_is_judged(
        tmp_path: Path, keys: Any) -> None:
    (accounts,) = answers(tmp_path, keys, "/accounts/c-1")
    assert accounts.status_code == 403, accounts.text  # contact.email judged, and refused
    assert "@example.com" not in accounts.text


def test_a_name_that_stays_undefined_stops_the_start() -> None:
    class Dangling(BaseModel):
        name: NAME
        later: Missing  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(PolicyError, match="not defined"):
        plan_for(Dangling)


def test_a_model_holding_itself_with_no_category_has_no_plan() -> None:
    assert plan_for(Node) is None
    plan = plan_for(Person)
    assert plan is not None
    assert set(plan.categories) == {"identity.name", "contact.email"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, MAX_NESTING + 4))
def test_no_email_at_any_depth_and_every_name_within_the_bound(depth: int) -> None:
    plan = plan_for(Person)
    assert plan is not None
    sent = TypeAdapter(Person).dump_python(person(depth), mode="json")
    out = plan.minimise(sent, frozenset({"identity.name"}))
    assert "@example.com" not in str(out)
    names = str(out).count("name-")
    assert names == 2 * depth if depth <= MAX_NESTING else names >= 2 * MAX_NESTING
    everything = plan.minimise(sent, frozenset({"identity.name", "contact.email"}))
    if depth < MAX_NESTING:  # released in full: sent as it came
        assert everything == sent
    else:  # past the bound an object of the model is sent with no key, never whole
        assert str(everything).count("@example.com") <= 2 * (MAX_NESTING + 1)


@pytest.mark.parametrize("model", [Person, Customer, Order])
def test_a_plan_of_a_model_holding_itself_is_small(model: Any) -> None:
    plan = plan_for(model)
    assert plan is not None
    assert len(repr(plan)) < 200
    assert len(plan.paths()) < 10 * MAX_NESTING
