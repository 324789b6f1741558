"""Tenth review: a category inside a ``TypedDict`` or ``NamedTuple`` is never ignored.

A response model's categories and field plan follow Pydantic models and dataclasses.
Pydantic serialises a ``TypedDict`` (as an object) and a ``NamedTuple`` (as an array)
too, and a ``Category`` on their fields was read by nobody: a model holding
``contact: Contact`` with ``Contact`` a ``TypedDict`` whose ``email`` is
``contact.email`` declared only ``identity.name``, so a ``deny`` route answered 200 with
the email to a caller refused ``contact.email``. Such a type is now refused when the
route is read, naming the field; one without a category is sent as it is.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, NamedTuple, NotRequired, Required

import pytest
from pydantic import BaseModel
from typing_extensions import ReadOnly, TypedDict

from guard._errors import PolicyError
from middleware import Category
from middleware.fields import plan_for
from tests.security.test_red4_fields import asked_as_caller

EMAIL = "ann@example.com"


class ContactDict(TypedDict):
    email: Annotated[str, Category("contact.email")]


class ContactTuple(NamedTuple):
    email: Annotated[str, Category("contact.email")]


class OptionalContact(TypedDict, total=False):  # a qualifier around the categorised type
    email: NotRequired[Annotated[str, Category("contact.email")]]


class RequiredContact(TypedDict, total=False):
    email: Required[ReadOnly[Annotated[str, Category("contact.email")]]]


class Meta(TypedDict):  # no category: sent as it is
    source: str
    children: list[Meta]


class ByDict(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contact: ContactDict


class ByTuple(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contact: ContactTuple | None = None


class ByOptional(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contact: OptionalContact


with warnings.catch_warnings():  # Pydantic does not enforce ReadOnly: not what this is about
    warnings.filterwarnings("ignore", "Item .* is using the `ReadOnly` qualifier")

    class ByRequired(BaseModel):
        name: Annotated[str, Category("identity.name")]
        contact: RequiredContact


class WithMeta(BaseModel):
    name: Annotated[str, Category("identity.name")]
    meta: Meta


@pytest.mark.parametrize(("model", "value"), [
    (ByDict, {"name": "Ann", "contact": {"email": EMAIL}}),
    (ByTuple, {"name": "Ann", "contact": (EMAIL,)}),
    (ByOptional, {"name": "Ann", "contact": {"email": EMAIL}}),
    (ByRequired, {"name": "Ann", "contact": {"email": EMAIL}}),
], ids=["TypedDict", "NamedTuple", "NotRequired", "Required ReadOnly"])
def test_a_category_inside_a_typed_dict_never_goes_unjudged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    answer = asked_as_caller(model, value, tmp_path, keys)
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert answer is None, f"{answer.status_code} {answer.text}"  # the app refuses to start
    with pytest.raises(PolicyError, match="a category inside a"):
        plan_for(model)


def test_a_typed_dict_without_a_category_is_sent_as_it_is(tmp_path: Path, keys: Any) -> None:
    value = {"name": "Ann", "meta": {"source": "web", "children": [{"source": "x",
                                                                     "children": []}]}}
    answer = asked_as_caller(WithMeta, value, tmp_path, keys)
    assert answer is not None, "the app refused to start"
    assert answer.status_code == 200, answer.text
    assert answer.json() == value
