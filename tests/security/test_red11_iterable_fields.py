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
from tokenkit import guard_settings

from middleware import Category
from middleware.fields import categories_of, plan_for
from tests.security.test_red4_fields import CALLER, asked_of_a_deny_route

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
    token = keys.mint(sub=CALLER)
    answer = asked_of_a_deny_route(model, value, guard_settings(tmp_path, keys), token)
    assert answer is not None, "the app refused to start"
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert answer.status_code == 403, answer.text
    assert EMAIL not in answer.text
    assert categories_of(model) == ("identity.name", "contact.email")


@pytest.mark.parametrize(("model", "value"), CASES, ids=IDS)
def test_a_minimised_collection_loses_its_withheld_items(model: Any, value: Any) -> None:
    plan = plan_for(model)
    assert plan is not None
    assert EMAIL not in repr(plan.minimise(value, frozenset({"identity.name"})))
