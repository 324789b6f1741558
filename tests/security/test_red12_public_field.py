"""A routes.csv field named ``public`` carries no field nobody named (twelfth review).

A minimise row of routes.csv names the upstream's fields one by one, and the sidecar
removes every field no pair names: nothing declares the upstream's answer, so a field
added to it later is no field the policy judged. A ``path=public`` field ("no personal
data, sent to every caller") was sent whole whatever it held: when the upstream's
``customer_id`` became an object (``{"id": "c-1", "email": "ann@example.com"}``), the
email inside it, named by no pair, reached every caller the route allows, among them
``proc:payments``, refused ``contact.email``. A public field keeps what it was declared
as, a value with no fields: a string, a number, a list of them; an object in it loses
every key (no pair names them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench._pg import free_port
from middleware.fields import FieldPlan

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
EMAIL = "ann@example.com"
ROUTES = ("GET, /customers/{customer_id}/record, customer_id=public name=identity.name "
          "contact.email=contact.email tags=public, read, customer_id, minimise\n")
RECORD = {"customer_id": {"id": "c-1", "email": EMAIL}, "name": "Ann",
          "contact": {"email": EMAIL}, "tags": ["gold", {"mail": EMAIL}]}


async def record(request: Request) -> JSONResponse:
    return JSONResponse(RECORD)


def test_a_public_field_never_carries_a_field_no_pair_names(tmp_path: Path, keys: Any) -> None:
    policy = policy_copy(tmp_path / "policy", SHIPPED, routes=ROUTES)
    upstream_app = Starlette(routes=[Route("/customers/{customer_id}/record", record)])
    with ServerThread(upstream_app, free_port()) as upstream:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream.url)
        with serve_sidecar(settings) as sidecar:
            answer = httpx.get(sidecar.url + "/customers/c-1/record", timeout=10, headers={
                "authorization": f"Bearer {keys.mint(sub='proc:payments')}",
                "x-purpose": "order.processing.payments"})
    assert answer.status_code == 200, answer.text
    assert EMAIL not in answer.text  # before: twice, in customer_id and in tags
    assert answer.json() == {"customer_id": {}, "name": "Ann", "contact": {},
                             "tags": ["gold", {}]}


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
_JSON = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=10)


def _keys(value: Any) -> bool:
    """Whether ``value`` holds an object with a key anywhere."""
    if isinstance(value, dict):
        return bool(value) or any(_keys(v) for v in value.values())
    if isinstance(value, list):
        return any(_keys(v) for v in value)
    return False


@given(value=_JSON)
def test_a_public_field_keeps_its_scalars_and_no_key(value: Any) -> None:
    plan = FieldPlan.from_paths({"id": None, "name": "identity.name"})
    out = plan.minimise({"id": value, "name": "Ann"}, frozenset({"identity.name"}))
    assert not _keys(out["id"])
    if not _keys(value):  # scalars, lists of them: sent as they are
        assert out["id"] == value
