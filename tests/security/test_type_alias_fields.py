"""A type alias never hides a category: it is planned as the type it names.

Pydantic serialises a field typed with a type alias (``TypeAliasType``, Python 3.12's
``type`` statement) as the type the alias names, but the field plan took an alias for
a type with no fields and no category: a ``deny`` route whose model held
``contacts: Contacts`` (``list[Contact]``) or ``email: Email`` (a categorised ``str``)
declared ``identity.name`` alone and answered a caller refused ``contact.email`` 200
with the email. An alias is now followed; one that holds itself, or is given types,
with a category in it is refused at start; one with none is sent as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import pytest
from pydantic import BaseModel
from typing_extensions import TypeAliasType

from guard._errors import PolicyError
from middleware import Category
from middleware.fields import plan_for
from tests.security.test_red4_fields import asked_as_caller, assert_judged_for_the_email

EMAIL = "ann@example.com"
T = TypeVar("T")


class Contact(BaseModel):
    email: Annotated[str, Category("contact.email")]


Email = TypeAliasType("Email", Annotated[str, Category("contact.email")])
Contacts = TypeAliasType("Contacts", list[Contact])
Json = TypeAliasType("Json", "dict[str, Json] | list[Json] | str | int | None")
Tree = TypeAliasType("Tree", "list[Contact | Tree]")
Boxed = TypeAliasType("Boxed", list[T], type_params=(T,))


class ByValue(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email: Email


class ByList(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contacts: Contacts


class ByJson(BaseModel):  # an alias that holds itself, no category: sent as it is
    name: Annotated[str, Category("identity.name")]
    extra: Json


class ByTree(BaseModel):
    name: Annotated[str, Category("identity.name")]
    tree: Tree


class ByBoxed(BaseModel):
    name: Annotated[str, Category("identity.name")]
    box: Boxed[Contact]


@pytest.mark.parametrize(("model", "value"), [
    (ByValue, {"name": "Ann", "email": EMAIL}),
    (ByList, {"name": "Ann", "contacts": [{"email": EMAIL}]}),
], ids=["a categorised value", "a list of models"])
def test_a_category_behind_a_type_alias_is_judged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert_judged_for_the_email(asked_as_caller(model, value, tmp_path, keys), model)


@pytest.mark.parametrize("model", [ByTree, ByBoxed], ids=["holds itself", "given types"])
def test_an_alias_no_plan_can_follow_with_a_category_in_it_is_refused(model: Any) -> None:
    with pytest.raises(PolicyError, match="a type alias that holds itself or is given"):
        plan_for(model)


def test_an_alias_that_holds_itself_without_a_category_is_sent_as_it_is(
        tmp_path: Path, keys: Any) -> None:
    value = {"name": "Ann", "extra": {"a": [1, "x", {"b": None}]}}
    answer = asked_as_caller(ByJson, value, tmp_path, keys)
    assert answer is not None, "the app refused to start"
    assert answer.status_code == 200, answer.text
    assert answer.json() == value
