"""Fifth review: a minimised answer's field plan names the keys that go on the wire.

A ``minimise`` route removes a withheld field by the key the plan gives it. The
plan named a Pydantic model's field by its alias and a dataclass's field by its
Python name; Pydantic serialises otherwise in several places: a route with
``response_model_by_alias=False`` sends field names, not aliases; a dataclass
(the standard library's or Pydantic's) whose field has an alias, or whose config
has an alias generator, sends the alias; a Pydantic dataclass's ``computed_field``
is serialised like a field. A key the plan does not name passes the minimiser
untouched, so the withheld value reached a caller the policy refuses it to (and
the computed field's category was not even judged on a ``deny`` route). Each
case is served here by a real uvicorn to a caller released ``identity.name`` but
not ``contact.email``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, computed_field
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass as pydantic_dataclass
from tokenkit import guard_settings

from middleware import Category, GuardMiddleware, guarded
from middleware.fields import plan_for
from tests.security.test_red4_fields import CALLER, EMAIL, PURPOSE, served


class Aliased(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email_address: Annotated[str, Category("contact.email"), Field(alias="emailAddress")]


class Holder(BaseModel):
    owner: Annotated[str, Category("identity.name")]
    contact: Aliased


@dataclasses.dataclass
class PlainAliased:
    name: Annotated[str, Category("identity.name")]
    email_address: Annotated[str, Category("contact.email"), Field(alias="mail")]


@dataclasses.dataclass
class PlainGenerated:
    __pydantic_config__ = ConfigDict(alias_generator=to_camel)
    name: Annotated[str, Category("identity.name")]
    email_address: Annotated[str, Category("contact.email")]


@pydantic_dataclass
class PydanticAliased:
    name: Annotated[str, Category("identity.name")]
    email_address: Annotated[str, Category("contact.email")] = Field(
        serialization_alias="mail")


@pydantic_dataclass
class PydanticComputed:
    name: Annotated[str, Category("identity.name")]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def email(self) -> Annotated[str, Category("contact.email")]:
        return EMAIL


# case -> (response model, the value returned, response_model_by_alias)
CASES: dict[str, tuple[Any, Callable[[], Any], bool]] = {
    "model-by-field-name": (
        Aliased, lambda: Aliased(name="Ann", emailAddress=EMAIL), False),
    "nested-model-by-field-name": (
        Holder, lambda: Holder(owner="Ann", contact=Aliased(name="Ann", emailAddress=EMAIL)),
        False),
    "dataclass-alias": (PlainAliased, lambda: PlainAliased("Ann", EMAIL), True),
    "dataclass-alias-generator": (PlainGenerated, lambda: PlainGenerated("Ann", EMAIL), True),
    "pydantic-dataclass-alias": (
        PydanticAliased, lambda: PydanticAliased(name="Ann", email_address=EMAIL), True),
    "pydantic-dataclass-computed": (
        PydanticComputed, lambda: PydanticComputed(name="Ann"), True),
}


def app_for(case: str, mode: str, settings: Any) -> FastAPI:
    model, make, by_alias = CASES[case]
    app = FastAPI()

    @app.get("/records/{customer_id}", response_model=model,
             response_model_by_alias=by_alias)
    @guarded(subject="customer_id", mode=mode)
    async def record(customer_id: str) -> Any:
        return make()

    app.add_middleware(GuardMiddleware, settings=settings)
    return app


@pytest.mark.parametrize("mode", ["deny", "minimise"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_field_sent_under_another_key_never_reaches_a_caller_without_its_category(
        tmp_path: Path, keys: Any, case: str, mode: str) -> None:
    model, make, by_alias = CASES[case]
    assert EMAIL in TypeAdapter(model).dump_json(make(), by_alias=by_alias).decode()
    settings = guard_settings(tmp_path, keys)
    token = keys.mint(sub=CALLER)

    def call(base: str) -> httpx.Response:
        return httpx.get(base + "/records/c-1", timeout=10,
                         headers={"authorization": f"Bearer {token}", "x-purpose": PURPOSE})

    answer = served(app_for(case, mode, settings), call)
    assert answer is not None, f"{case}: the app refused to start"
    assert EMAIL not in answer.text, f"{case} ({mode}): {answer.status_code} {answer.text}"
    if mode == "minimise":  # the caller still gets what it may have
        assert answer.status_code == 200, answer.text
        assert "Ann" in answer.text


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_names_the_keys_pydantic_serialises(case: str) -> None:
    model, make, by_alias = CASES[case]
    plan = plan_for(model, by_alias=by_alias)
    assert plan is not None
    assert "contact.email" in plan.categories
    sent = TypeAdapter(model).dump_python(make(), mode="json", by_alias=by_alias)
    withheld = plan.minimise(sent, frozenset({"identity.name"}))
    assert EMAIL not in str(withheld)
    assert "Ann" in str(withheld)
