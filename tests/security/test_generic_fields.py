"""A generic dataclass, ``TypedDict`` or ``NamedTuple`` given its types never hides a category.

Pydantic serialises ``Box[Person]`` (a standard-library generic dataclass, a generic
``TypedDict`` or ``NamedTuple``) field by field, but the field plan stopped at any
parametrised type that was not a list, a tuple, a set or a dict: a ``deny`` route whose
model held ``box: Box[Contact]`` declared ``identity.name`` alone and answered a caller
refused ``contact.email`` 200 with the email (a generic ``NamedTuple``'s own categorised
field went the same way; a generic ``TypedDict`` was refused as a free-form mapping).
Such a type is now refused when the route is read when it or its types carry a category;
one with none is sent as it is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Generic, NamedTuple, TypeVar

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from guard._errors import PolicyError
from middleware import Category
from middleware.fields import plan_for
from tests.security.test_red4_fields import asked_as_caller

EMAIL = "ann@example.com"
T = TypeVar("T")


@dataclasses.dataclass
class Contact:
    email: Annotated[str, Category("contact.email")]


@dataclasses.dataclass
class Box(Generic[T]):
    item: T


@dataclasses.dataclass
class Labelled(Generic[T]):
    email: Annotated[str, Category("contact.email")]
    label: T


class DictBox(TypedDict, Generic[T]):
    item: T


class Tagged(NamedTuple, Generic[T]):
    email: Annotated[str, Category("contact.email")]
    item: T


class ByBox(BaseModel):
    name: Annotated[str, Category("identity.name")]
    box: Box[Contact]


class ByLabelled(BaseModel):
    name: Annotated[str, Category("identity.name")]
    box: Labelled[int] | None = None


class ByDictBox(BaseModel):
    name: Annotated[str, Category("identity.name")]
    box: DictBox[Contact]


class ByTagged(BaseModel):
    name: Annotated[str, Category("identity.name")]
    box: list[Tagged[int]]


class ByPlain(BaseModel):  # nothing categorised inside: sent as it is
    name: Annotated[str, Category("identity.name")]
    box: Box[int]


@pytest.mark.parametrize(("model", "value"), [
    (ByBox, {"name": "Ann", "box": {"item": {"email": EMAIL}}}),
    (ByLabelled, {"name": "Ann", "box": {"email": EMAIL, "label": 1}}),
], ids=["argument", "own field"])
def test_a_category_inside_a_generic_dataclass_never_goes_unjudged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    answer = asked_as_caller(model, value, tmp_path, keys)
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert answer is None, f"{answer.status_code} {answer.text}"  # the app refuses to start
    with pytest.raises(PolicyError, match="a generic"):
        plan_for(model)


@pytest.mark.parametrize(("model", "refusal"), [
    (ByDictBox, "a generic DictBox"),
    (ByTagged, "a category inside a NamedTuple"),  # before: planned as a tuple of ints
], ids=["TypedDict", "NamedTuple"])
def test_a_category_in_a_generic_typed_dict_or_tuple_is_refused(model: Any, refusal: str
                                                                 ) -> None:
    with pytest.raises(PolicyError, match=refusal):
        plan_for(model)


def test_a_generic_dataclass_without_a_category_is_sent_as_it_is(
        tmp_path: Path, keys: Any) -> None:
    value = {"name": "Ann", "box": {"item": 7}}
    answer = asked_as_caller(ByPlain, value, tmp_path, keys)
    assert answer is not None, "the app refused to start"
    assert answer.status_code == 200, answer.text
    assert answer.json() == value
