"""A ``NewType`` never hides a category: it is planned as the type it names.

Pydantic serialises a field typed ``NewType("CustomerRecord", Customer)`` as the
``Customer`` it names, but the field plan took a ``NewType`` for a type of no model: a
``deny`` route whose model held ``customer: CustomerRecord`` declared ``identity.name``
alone and answered a caller refused ``contact.email`` 200 with the email. A
``NewType`` is now read as its supertype, a ``Category`` inside it included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NewType

import pytest
from pydantic import BaseModel
from tokenkit import guard_settings

from middleware import Category
from middleware.fields import categories_of
from tests.security.test_red4_fields import CALLER, asked_of_a_deny_route

EMAIL = "ann@example.com"


class Contact(BaseModel):
    email: Annotated[str, Category("contact.email")]


ContactRecord = NewType("ContactRecord", Contact)
Email = NewType("Email", Annotated[str, Category("contact.email")])  # type: ignore[misc]


class ByModel(BaseModel):
    name: Annotated[str, Category("identity.name")]
    contact: ContactRecord


class ByValue(BaseModel):
    name: Annotated[str, Category("identity.name")]
    email: list[Email]


@pytest.mark.parametrize(("model", "value"), [
    (ByModel, {"name": "Ann", "contact": {"email": EMAIL}}),
    (ByValue, {"name": "Ann", "email": [EMAIL]}),
], ids=["a model", "a categorised value"])
def test_a_category_behind_a_new_type_is_judged(
        tmp_path: Path, keys: Any, model: Any, value: Any) -> None:
    token = keys.mint(sub=CALLER)
    answer = asked_of_a_deny_route(model, value, guard_settings(tmp_path, keys), token)
    assert answer is not None, "the app refused to start"
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert answer.status_code == 403, answer.text
    assert EMAIL not in answer.text
    assert categories_of(model) == ("identity.name", "contact.email")
