"""Property: a minimised response never leaks a withheld category and keeps every released one.

hypothesis builds response models (Pydantic, nested models, lists, masked and
removed fields, fields with no category), responses with a unique value per
field, and callers with their purposes from the shipped policy (their grants).
Each example is served by a FastAPI app behind ``GuardMiddleware`` with a real
SQLite audit trail, and the audit event's released categories are compared
with the categories present in the body.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, create_model
from tokenkit import Keys, audit_rows, guard_settings

from guard._guard import Guard
from middleware import REMOVE, Category, GuardMiddleware, RouteTable, guarded

LEAVES = ("identity.name", "identity.username", "contact.email", "contact.phone",
          "contact.billing_address", "financial.payment_card", "financial.bank_account",
          "transaction.payments", "profile.interests", "marketing.preferences",
          "usage.website", "technical.device", "technical.login")
CALLERS = (("svc:crm", "relationship.management"), ("svc:marketing", "marketing.advertising"),
           ("proc:payments", "order.processing.payments"), ("svc:auth",
                                                            "business.administration"),
           ("svc:analytics", "analytics.improvement"), ("proc:mailer", "marketing.advertising"),
           ("adv:accountants", "legal.compliance"), ("grp:exalens-us",
                                                     "business.administration"),
           ("svc:support", "rights.request"), ("svc:crm", "order.processing"))
MASK = "<withheld>"
_ids = itertools.count()


@dataclass
class Spec:
    """One field: its category, mask, and either a scalar or a nested object (maybe a list)."""

    name: str
    category: str | None
    masked: bool
    children: list[Spec] | None
    many: bool


@st.composite
def fields(draw: st.DrawFn, depth: int = 0) -> list[Spec]:
    count = draw(st.integers(1, 5))
    out = []
    for i in range(count):
        nested = depth < 2 and draw(st.booleans())
        out.append(Spec(
            name=f"f{depth}_{i}",
            category=draw(st.none() | st.sampled_from(LEAVES)) if nested
            else draw(st.sampled_from(LEAVES)) if draw(st.integers(0, 4)) else None,
            masked=draw(st.booleans()),
            children=draw(fields(depth + 1)) if nested else None,
            many=nested and draw(st.booleans()),
        ))
    return out


def build_model(specs: list[Spec]) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for spec in specs:
        tp: Any = str
        if spec.children is not None:
            tp = build_model(spec.children)
            if spec.many:
                tp = list[tp]  # type: ignore[valid-type]
        if spec.category is not None:
            tp = Annotated[tp, Category(spec.category, mask=MASK if spec.masked else REMOVE)]
        definitions[spec.name] = (tp, ...)
    return create_model(f"M{next(_ids)}", **definitions)


def build_value(specs: list[Spec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.children is None:
            out[spec.name] = f"v{next(_ids)}x"
        elif spec.many:
            out[spec.name] = [build_value(spec.children) for _ in range(2)]
        else:
            out[spec.name] = build_value(spec.children)
    return out


def categories(specs: list[Spec]) -> set[str]:
    found: set[str] = set()
    for spec in specs:
        if spec.category:
            found.add(spec.category)
        if spec.children:
            found |= categories(spec.children)
    return found


def check(specs: list[Spec], sent: Any, got: Any, released: set[str],
          present: set[str], leaked: list[str]) -> None:
    """Walk the sent and received bodies together; note present categories and leaks."""
    if isinstance(sent, list):
        assert isinstance(got, list)
        assert len(got) == len(sent)
        for s, g in zip(sent, got, strict=True):
            check(specs, s, g, released, present, leaked)
        return
    assert isinstance(got, dict)
    for spec in specs:
        value = sent[spec.name]
        if spec.category is not None and spec.category not in released:
            if spec.masked:
                assert got[spec.name] == MASK
            else:
                assert spec.name not in got
            leaked.extend(_scalars(value))
            continue
        assert spec.name in got  # released (or no category): always sent
        if spec.category is not None:
            present.add(spec.category)
        if spec.children is None:
            assert got[spec.name] == value
        else:
            check(spec.children, value, got[spec.name], released, present, leaked)


def _scalars(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _scalars(v)
    elif isinstance(value, list):
        for v in value:
            yield from _scalars(v)
    else:
        yield value


def reachable(specs: list[Spec], released: set[str]) -> set[str]:
    """Categories of fields whose every enclosing categorised field is released."""
    found: set[str] = set()
    for spec in specs:
        if spec.category is not None and spec.category not in released:
            continue
        if spec.category is not None:
            found.add(spec.category)
        if spec.children:
            found |= reachable(spec.children, released)
    return found


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("minprop")
    settings_ = guard_settings(base, keys)
    guard = Guard.from_settings(settings_)
    yield {"guard": guard, "settings": settings_, "db": base / "audit.db",
           "tokens": {c: keys.mint(sub=c) for c, _ in CALLERS}}
    guard.close()


async def get(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    """``GET /r`` from ``app`` in process (httpx's ASGI transport)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://guarded") as client:
        return await client.get("/r", headers=headers)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(specs=fields(), who=st.sampled_from(CALLERS))
def test_minimised_responses(env: dict[str, Any], specs: list[Spec],
                             who: tuple[str, str]) -> None:
    assume(categories(specs))  # a minimising route needs a categorised field
    model = build_model(specs)
    sent = build_value(specs)
    app = FastAPI()

    @app.get("/r", response_model=model)
    @guarded(mode="minimise")
    async def route() -> Any:
        return sent

    app.add_middleware(GuardMiddleware, guard=env["guard"], settings=env["settings"],
                       routes=RouteTable(()))
    caller, purpose = who
    got = asyncio.run(get(app, {"authorization": f"Bearer {env['tokens'][caller]}",
                                "x-purpose": purpose}))
    decision_id = got.headers.get("x-guard-decision-id") or got.json()["decision_id"]
    (row,) = audit_rows(Path(env["db"]), "event_id = ?", (decision_id,))
    audited = json.loads(row["detail"])
    released = set(audited["released"])
    assert released | set(audited["withheld"]) == categories(specs)
    if got.status_code == 403:
        assert row["allowed"] == 0
        assert not released  # every category is personal here: refused only if none is
        assert not any(v in got.text for v in _scalars(sent))
        return
    assert got.status_code == 200, got.text
    assert row["allowed"] == 1
    present: set[str] = set()
    leaked: list[str] = []
    check(specs, sent, got.json(), released, present, leaked)
    for value in leaked:
        assert value not in got.text
    assert present == reachable(specs, released)
    assert present <= released
    if all(spec.children is None for spec in specs):
        assert present == released
