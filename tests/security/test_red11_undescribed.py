"""Eleventh review: a response type Pydantic cannot describe is refused, not taken as closed.

Whether a ``deny`` route's model sends keys beyond its fields (``extra="allow"``, a
``model_serializer``) is read from Pydantic's own schema of it. A type Pydantic cannot
describe (FastAPI refuses it when the route is made, but a route of another framework
may name one) was taken for one with no extra keys: the route started on its declared
categories alone. It stops the start now, as a type the field plan cannot follow does.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from guard._errors import PolicyError
from middleware.fields import route_fields


@pytest.mark.parametrize("model", [list[socket.socket], dict[str, socket.socket]],
                         ids=["list", "dict"])
def test_a_type_pydantic_cannot_describe_stops_the_start(model: object) -> None:
    route = SimpleNamespace(response_model=model, endpoint=lambda: None)
    # Before: (("identity.name",), None), the declared categories alone.
    with pytest.raises(PolicyError, match="Pydantic cannot describe what it sends"):
        route_fields(("identity.name",), "deny", route, "/records/{customer_id}")
