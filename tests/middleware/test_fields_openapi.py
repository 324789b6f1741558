"""FastAPI's OpenAPI with ``withheld_optional``: removable fields are optional, others kept."""

from __future__ import annotations

from typing import Any

from examples.customers import create_app
from middleware.fields import withheld_optional


def _objects(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


def test_the_example_publishes_no_removable_field_as_required() -> None:
    schemas = create_app(enforce=False).openapi()["components"]["schemas"]
    record = schemas["CustomerRecord"]
    assert record["required"] == ["customer_id", "contact", "payment_card"]  # masked: present
    assert "required" not in schemas["ContactDetails"]  # every contact field may be left out
    for obj in _objects(schemas):
        for name in obj.get("required", []):
            assert obj["properties"][name].get("x-withheld") != "removed", name


def test_withheld_optional_leaves_a_schema_without_categories_unchanged() -> None:
    schema = {"type": "object", "properties": {"required": {"type": "string"}},
              "required": ["required"], "items": [{"required": True}]}
    assert withheld_optional(schema) == {
        "type": "object", "properties": {"required": {"type": "string"}},
        "required": ["required"], "items": [{"required": True}]}
