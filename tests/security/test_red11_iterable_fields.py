"""A collection of any kind never hides a category: its items are planned as a list's.

Pydantic serialises a field typed ``Iterable[Contact]`` or ``collections.abc.Set[...]``
(``typing.AbstractSet``) as a JSON list of its items, but the field plan
followed only lists, tuples, sets and ``Sequence``: a ``deny`` route whose model held
``contacts: Iterable[Contact]`` (or ``emails: AbstractSet[Email]``) declared
``identity.name`` alone and answered a caller refused ``contact.email`` 200 with the
email. Every iterable that is not a string or a mapping is now planned as a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from middleware import Category
from middleware.fields import plan_for
from tests.security.test_red4_fields import asked_as_caller, assert_judged_for_the_email

EMAIL = "ann@example.com"
Email = Annotated[str, Category("contact.email")]


class Contact(BaseModel):
    email: Email


class ByIterable(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contacts: Iterable[Contact]


class BySet(BaseModel):
    name: Annotated[str, Category("identity.name")]
    emails: Set[Email]


class ByIterableValue(BaseModel):
    name: Annotated[str, Category("identity.name")]
    emails: Iterable[Email]


CASES = [
    (ByIterable, {"name": "Ann", "contacts": [{"email": EMAIL}]}),
    (BySet, {"name": "Ann", "emails": [EMAIL]}),
    (ByIterableValue, {"name": "Ann", "emails": [EMAIL]}),
]
IDS = ["Iterable of models", "abc.Set of values", "Iterable of values"]


@pytest.mark.parametrize(("model", "value"), CASES, ids=IDS)
def test_a_category_inside_any_collection_is_judged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert_judged_for_the_email(asked_as_caller(model, value, tmp_path, keys), model)


@pytest.mark.parametrize(("model", "value"), CASES, ids=IDS)
def test_a_minimised_collection_loses_its_withheld_items(model: Any, value: Any) -> None:
    plan = plan_for(model)
    assert plan is not None
    assert EMAIL not in repr(plan.minimise(value, frozenset({"identity.name"})))
