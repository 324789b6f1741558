"""A type variable never hides a category: it is planned as the type Pydantic sends.

A generic model used as a response model without its types (``Page``, not
``Page[Contact]``) is sent by Pydantic with each type variable read as its default,
else its constraints, else its bound: ``items: list[T]`` with ``T`` bound to
``Contact`` sends each contact's email. The field plan took a type variable for a
type with nothing in it, so a ``deny`` route with such a model declared
``identity.name`` alone and answered a caller refused ``contact.email`` 200 with the
email. A type variable is now planned as what Pydantic reads it as.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import pytest
import typing_extensions
from pydantic import BaseModel

from middleware import Category
from middleware.fields import categories_of, plan_for
from tests.security.test_red4_fields import asked_as_caller, assert_judged_for_the_email

EMAIL = "ann@example.com"
Name = Annotated[str, Category("identity.name")]


class Contact(BaseModel):
    email: Annotated[str, Category("contact.email")]


Bound = TypeVar("Bound", bound=Contact)
Default = typing_extensions.TypeVar("Default", default=Contact)
Either = TypeVar("Either", Contact, int)
Email = typing_extensions.TypeVar("Email", default=Annotated[str, Category("contact.email")])
Later = TypeVar("Later", bound="LaterContact")  # a model defined further down


class ByBound(BaseModel, Generic[Bound]):
    name: Name
    items: list[Bound]


class ByDefault(BaseModel, Generic[Default]):
    name: Name
    items: list[Default]


class ByConstraints(BaseModel, Generic[Either]):
    name: Name
    items: list[Either]


class ByDefaultValue(BaseModel, Generic[Email]):
    name: Name
    items: list[Email]


class ByForwardBound(BaseModel, Generic[Later]):
    name: Name
    items: list[Later]


class LaterContact(BaseModel):
    email: Annotated[str, Category("contact.email")]


@dataclasses.dataclass
class Box(Generic[Bound]):
    item: Bound


class ByDataclass(BaseModel):
    name: Name
    box: Box  # type: ignore[type-arg]


ITEMS = {"name": "Ann", "items": [{"email": EMAIL}]}
CASES = [
    (ByBound, ITEMS),
    (ByDefault, ITEMS),
    (ByConstraints, ITEMS),
    (ByDefaultValue, {"name": "Ann", "items": [EMAIL]}),
    (ByForwardBound, ITEMS),
    (ByDataclass, {"name": "Ann", "box": {"item": {"email": EMAIL}}}),
]
IDS = ["bound", "default", "constraints", "a categorised default", "a bound defined later",
       "a generic dataclass"]


@pytest.mark.parametrize(("model", "value"), CASES, ids=IDS)
def test_a_category_behind_a_type_variable_is_judged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert_judged_for_the_email(asked_as_caller(model, value, tmp_path, keys), model)


@pytest.mark.parametrize(("model", "value"), CASES, ids=IDS)
def test_a_minimised_type_variable_loses_its_withheld_fields(model: Any, value: Any) -> None:
    plan = plan_for(model)
    assert plan is not None
    assert EMAIL not in repr(plan.minimise(value, frozenset({"identity.name"})))


def test_a_free_type_variable_is_sent_as_it_is() -> None:
    free = TypeVar("free")

    class Loose(BaseModel, Generic[free]):
        name: Name
        extra: free

    assert categories_of(Loose) == ("identity.name",)
