"""The sidecar's OpenAPI schemas never require a field a minimised answer may leave out."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel

from middleware import Category
from middleware.sidecar._openapi import _schemas, openapi_document


class _Contact(BaseModel):
    email: Annotated[str, Category("contact.email")]
    phone: Annotated[str, Category("contact.phone", mask="withheld")]
    kind: str


class _Record(BaseModel):
    customer_id: str
    name: Annotated[str, Category("identity.name")]
    card: Annotated[str | None, Category("financial.payment_card", mask=None)]
    contact: _Contact
    others: list[_Contact]


def test_removable_fields_are_not_required_masked_and_plain_ones_are() -> None:
    schemas = _schemas((_Record,))
    assert schemas["_Record"]["required"] == ["customer_id", "card", "contact", "others"]
    assert schemas["_Contact"]["required"] == ["phone", "kind"]
    assert schemas["_Record"]["properties"]["name"]["x-withheld"] == "removed"


def test_an_object_whose_every_required_field_is_removable_requires_nothing() -> None:
    class Only(BaseModel):
        email: Annotated[str, Category("contact.email")]

    assert "required" not in _schemas((Only,))["Only"]


def test_the_published_document_keeps_the_required_fields_of_its_own_models() -> None:
    schemas = openapi_document("/v1/check", version="0")["components"]["schemas"]
    assert schemas["DecideResult"]["required"] == ["decision_id", "decision"]
    assert "purpose" in schemas["DecideRequest"]["required"]
