"""Ninth review: a sidecar ``minimise`` route sends only the fields routes.csv names.

routes.csv names the upstream's fields by path and category; nothing declares the
upstream's answer (the middleware's plan comes from the response model FastAPI
serialises, the sidecar's from a list someone wrote). A field the list did not name
(an upstream that added ``ssn`` to its answer, a nested ``contact.fax``) passed the
minimiser to every caller the route allowed, whatever categories the policy released
to it: need-to-know held only for the fields someone remembered to list. A routes.csv
plan is now closed: a key it does not name is removed; ``path=public`` names a field
that is no personal data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, free_port, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from middleware.fields import FieldPlan
from middleware.routes import parse_routes

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ROUTES = (
    "GET, /customers/{customer_id}/record, name=identity.name contact.email=contact.email "
    "cards[].number=financial.payment_card, read, customer_id, minimise\n"
)
PUBLIC = ROUTES.replace("record, name=", "record, customer_id=public name=")
SECRETS = ("123-45-6789", "+44 20 7946 0000", "737", "GB33BUKB20201555555555")
RECORD = {"customer_id": "c-1", "name": "Ann", "ssn": SECRETS[0],
          "contact": {"email": "ann@example.com", "fax": SECRETS[1]},
          "cards": [{"number": "4111", "cvv": SECRETS[2]}], "bank": {"iban": SECRETS[3]}}


async def record(request: Request) -> JSONResponse:
    return JSONResponse(RECORD)


@contextlib.contextmanager
def _sidecar(tmp_path: Path, keys: Any, routes: str) -> Iterator[str]:
    """A sidecar with ``routes`` as its routes.csv in front of :func:`record`: its URL."""
    policy = policy_copy(tmp_path / "policy", POLICIES)
    (policy / "routes.csv").write_text(routes)
    upstream_app = Starlette(routes=[Route("/customers/{customer_id}/record", record)])
    with ServerThread(upstream_app, free_port()) as upstream:
        settings_ = sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream.url)
        with serve_sidecar(settings_) as sidecar:
            yield sidecar.url


def test_a_field_routes_csv_does_not_name_never_leaves_the_sidecar(
    tmp_path: Path, keys: Any,
) -> None:
    with _sidecar(tmp_path, keys, ROUTES) as url:
        for caller, purpose in (("svc:crm", "relationship.management"),
                                ("proc:payments", "order.processing.payments")):
            answer = httpx.get(url + "/customers/c-1/record", timeout=10, headers={
                "authorization": f"Bearer {keys.mint(sub=caller)}", "x-purpose": purpose})
            assert answer.status_code == 200, answer.text
            for secret in SECRETS:  # before: each passed to every caller
                assert secret not in answer.text, (caller, secret)
            assert set(answer.json()) <= {"name", "contact", "cards"}


def test_a_field_named_public_is_sent_to_every_caller_allowed_the_route(
    tmp_path: Path, keys: Any,
) -> None:
    with _sidecar(tmp_path, keys, PUBLIC) as url:
        answer = httpx.get(url + "/customers/c-1/record", timeout=10, headers={
            "authorization": f"Bearer {keys.mint(sub='proc:payments')}",
            "x-purpose": "order.processing.payments"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["customer_id"] == "c-1"
        assert SECRETS[0] not in answer.text


def test_a_public_field_is_no_category_of_the_route() -> None:
    (rule,) = parse_routes(PUBLIC)
    assert rule.categories == ("identity.name", "contact.email", "financial.payment_card")
    assert rule.fields is not None
    assert "customer_id" not in rule.fields.paths()


_KEYS = st.sampled_from(["a", "b", "c", "d"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20)
_PATHS = st.dictionaries(
    st.lists(_KEYS, min_size=1, max_size=3).map(".".join),
    st.sampled_from([None, "identity.name", "contact.email"]), max_size=5)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of the scalars in ``value`` (list items share their list's path)."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item, path)]
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    return [path]


@settings(max_examples=300, deadline=None)
@given(body=_JSON, paths=_PATHS, released=st.sets(st.sampled_from(["identity.name",
                                                                     "contact.email"])))
def test_only_named_and_released_fields_leave(
    body: Any, paths: dict[str, str | None], released: set[str],
) -> None:
    try:
        plan = FieldPlan.from_paths(paths)
    except Exception:  # a path under another field's path: refused at load
        return
    named = {tuple(path.split(".")): category for path, category in paths.items()}
    out = plan.minimise(body, frozenset(released))
    for leaf in _leaves(out):
        if not leaf:  # the body itself, a scalar (the minimiser refuses it: BodyError)
            continue
        owners = [leaf[:n] for n in range(1, len(leaf) + 1) if leaf[:n] in named]
        assert owners, f"{leaf} left, named by no path"
        category = named[owners[0]]
        assert category is None or category in released, (leaf, category)
