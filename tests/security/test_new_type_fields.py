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

from middleware import Category
from tests.security.test_red4_fields import asked_as_caller, assert_judged_for_the_email

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
    # Before: 200 with the email (the route was judged for identity.name alone).
    assert_judged_for_the_email(asked_as_caller(model, value, tmp_path, keys), model)
