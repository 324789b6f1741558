"""A category on a mapping's keys is judged: the field is withheld whole.

Pydantic sends a ``dict[Email, int]`` field as an object whose keys are the emails,
but a field's category was read from a mapping's values only: a ``deny`` route whose
model held ``visits: dict[Annotated[str, Category("contact.email")], int]`` declared
``identity.name`` alone and answered a caller refused ``contact.email`` 200 with the
emails, and a ``minimise`` route kept the field. The keys' category is now the
field's, as the values' is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from guard._errors import PolicyError
from middleware import Category
from middleware.fields import categories_of, plan_for
from tests.security.test_red4_fields import asked_as_caller, assert_judged_for_the_email

EMAIL = "ann@example.com"
Name = Annotated[str, Category("identity.name")]
Email = Annotated[str, Category("contact.email")]


class ByDict(BaseModel):
    name: Name
    visits: dict[Email, int]


class ByMapping(BaseModel):
    name: Name
    visits: Mapping[Email, int] | None


VALUE = {"name": "Ann", "visits": {EMAIL: 3}}
CASES = [ByDict, ByMapping]


@pytest.mark.parametrize("model", CASES, ids=["dict", "optional Mapping"])
def test_a_category_on_a_mappings_keys_is_judged(tmp_path: Path, keys: Any, model: Any) -> None:
    # Before: 200 with the email as a key (the route was judged for identity.name alone).
    assert_judged_for_the_email(asked_as_caller(model, VALUE, tmp_path, keys), model)


@pytest.mark.parametrize("model", CASES, ids=["dict", "optional Mapping"])
def test_a_minimised_mapping_with_categorised_keys_is_withheld(model: Any) -> None:
    plan = plan_for(model)
    assert plan is not None
    assert plan.minimise(VALUE, frozenset({"identity.name"})) == {"name": "Ann"}


def test_keys_and_values_of_two_categories_stop_the_start() -> None:
    class Two(BaseModel):
        phones: dict[Email, Annotated[str, Category("contact.phone")]]

    with pytest.raises(PolicyError, match="2 categories"):
        categories_of(Two)
