"""Fourth review: every categorised field a response model serialises is judged.

A route's categories and its field plan come from its response model. A field the
plan does not see is neither judged (a ``deny`` route allows the request on the
other categories) nor minimised: its value leaves whatever the policy says. Pydantic
serialises several such places: the values of a ``dict[str, Model]``, the root of a
``RootModel`` (sent bare, with no ``root`` key), a ``computed_field``, and a category
written inside the type (``Annotated[str, Category(...)] | None``, a list of them). Each is
served here by a real uvicorn to a caller that may receive ``identity.name`` but not
``contact.email``: the email never reaches it (or the app refuses to start, naming
the field it cannot judge).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, RootModel, computed_field
from tokenkit import guard_settings

from bench._pg import free_port
from guard._errors import PolicyError
from middleware import Category, GuardMiddleware, guarded
from middleware.fields import categories_of, plan_for

EMAIL = "ann@example.com"
CALLER, PURPOSE = "proc:payments", "order.processing.payments"  # identity.name, not contact


class Contact(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email: Annotated[str, Category("contact.email")]


class Book(BaseModel):
    owner: Annotated[str, Category("identity.name")]
    by_id: dict[str, Contact]


class People(RootModel[list[Contact]]):
    pass


class Card(BaseModel):
    name: Annotated[str, Category("identity.name")]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def email(self) -> Annotated[str, Category("contact.email")]:
        return EMAIL


class Optional(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email: Annotated[str, Category("contact.email")] | None = None
    emails: list[Annotated[str, Category("contact.email")]] = []


def book() -> Book:
    return Book(owner="Ann", by_id={"c-1": Contact(name="Ann", email=EMAIL)})


def people() -> People:
    return People([Contact(name="Ann", email=EMAIL)])


def card() -> Card:
    return Card(name="Ann")


def optional() -> Optional:
    return Optional(name="Ann", email=EMAIL, emails=[EMAIL])


CASES: dict[str, tuple[type[Any], Callable[[], Any]]] = {
    "dict-values": (Book, book), "root-model": (People, people), "computed-field": (Card, card),
    "optional-and-list-items": (Optional, optional)}


def app_for(model: type[Any], make: Callable[[], Any], mode: str, settings: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/records/{customer_id}", response_model=model)
    @guarded(subject="customer_id", mode=mode)
    async def record(customer_id: str) -> Any:
        return make()

    app.add_middleware(GuardMiddleware, settings=settings)
    return app


def asked_of_a_deny_route(model: Any, value: Any, settings_: Any, token: str
                          ) -> httpx.Response | None:
    """GET a guarded ``deny`` route whose categories are ``model``'s and which answers
    ``value``, under real uvicorn, as ``CALLER`` for ``PURPOSE``; None: the app refused to
    start."""
    api = FastAPI()

    @api.get("/records/{customer_id}", response_model=model)
    @guarded(subject="customer_id")  # deny: the categories are the model's
    async def record(customer_id: str) -> Any:
        return value

    api.add_middleware(GuardMiddleware, settings=settings_)
    return served(api, lambda base: httpx.get(
        base + "/records/c-1", timeout=10,
        headers={"authorization": f"Bearer {token}", "x-purpose": PURPOSE}))


def asked_as_caller(model: Any, value: Any, tmp_path: Path, keys: Any) -> httpx.Response | None:
    """:func:`asked_of_a_deny_route` as ``CALLER``, by a guard set up under ``tmp_path``."""
    return asked_of_a_deny_route(model, value, guard_settings(tmp_path, keys),
                                 keys.mint(sub=CALLER))


def assert_judged_for_the_email(answer: httpx.Response | None, model: Any) -> None:
    """A ``deny`` route whose ``model`` holds ``EMAIL`` answered a caller refused it 403,
    without it: the route was judged for the email too."""
    assert answer is not None, "the app refused to start"
    assert answer.status_code == 403, answer.text
    assert EMAIL not in answer.text
    assert categories_of(model) == ("identity.name", "contact.email")


def served(app: FastAPI, call: Callable[[str], httpx.Response]) -> httpx.Response | None:
    """``call(url)`` against ``app`` under real uvicorn; None when the app refused to start."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="critical", lifespan="on"))

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when the start-up fails
            server.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            return None  # the start-up failed: nothing is served
        if time.monotonic() > deadline:
            pytest.fail("the app neither started nor failed")
        time.sleep(0.02)
    try:
        return call(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("mode", ["deny", "minimise"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_categorised_field_the_plan_misses_never_reaches_a_caller_without_its_category(
        tmp_path: Path, keys: Any, case: str, mode: str) -> None:
    model, make = CASES[case]
    assert EMAIL in make().model_dump_json()  # what the app would send
    settings = guard_settings(tmp_path, keys)
    token = keys.mint(sub=CALLER)

    def call(base: str) -> httpx.Response:
        return httpx.get(base + "/records/c-1", timeout=10,
                         headers={"authorization": f"Bearer {token}", "x-purpose": PURPOSE})

    answer = served(app_for(model, make, mode, settings), call)
    if answer is not None:
        assert EMAIL not in answer.text, f"{case} ({mode}): {answer.status_code} {answer.text}"


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_names_every_category_the_model_serialises(case: str) -> None:
    model, _make = CASES[case]
    if case == "dict-values":  # refused, naming the field
        with pytest.raises(PolicyError, match=r"Book\.by_id: .*contact\.email"):
            plan_for(model)
        return
    plan = plan_for(model)
    assert plan is not None
    assert "contact.email" in plan.categories
    withheld = plan.minimise(_make().model_dump(mode="json", by_alias=True),
                             frozenset({"identity.name"}))
    assert EMAIL not in str(withheld)
