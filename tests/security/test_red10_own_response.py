"""Tenth review: a minimised answer holds only the keys its response model names.

A middleware ``minimise`` route's plan came from the response model and removed only
the categorised keys it named: any other key passed. FastAPI's serialisation sends
only the model's fields, but a handler that returns a ``Response`` of its own skips
it, a model with ``extra="allow"`` sends what it was given, and a model that
serialises itself (``model_serializer``) sends what it likes: an ``ssn``, or the email
again under another key, reached a caller released ``identity.name`` but not
``contact.email``. Served here by a real uvicorn to such a caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, model_serializer
from tokenkit import guard_settings

from middleware import Category, GuardMiddleware, guarded
from middleware.fields import plan_for
from tests.security.test_red4_fields import CALLER, PURPOSE, served

SECRET = "078-05-1120"
EMAIL = "ann@example.com"


class Contact(BaseModel):
    email: Annotated[str, Category("contact.email")]
    phone: str | None = None


class Record(BaseModel):
    id: str
    name: Annotated[str, Category("identity.name")]
    contact: Contact | None = None
    alt: Contact | str = "none"
    tags: list[str] = []


class Loose(Record):
    model_config = ConfigDict(extra="allow")


class Mirrored(Record):
    @model_serializer(mode="wrap")
    def _mirror(self, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        out["mail"] = self.contact.email if self.contact else None
        return out


def record(**extra: Any) -> dict[str, Any]:
    return {"id": "c-1", "name": "Ann", "contact": {"email": EMAIL, "phone": "01632"},
            "alt": "none", "tags": ["vip"], **extra}


def app(settings_: Any) -> FastAPI:
    api = FastAPI()

    @api.get("/own/{customer_id}", response_model=Record)
    @guarded(subject="customer_id", mode="minimise")
    async def own(customer_id: str) -> Any:
        body = record(ssn=SECRET)
        body["contact"]["fax"] = EMAIL
        return JSONResponse(body)

    @api.get("/loose/{customer_id}", response_model=Loose)
    @guarded(subject="customer_id", mode="minimise")
    async def loose(customer_id: str) -> Any:
        return record(ssn=SECRET)

    @api.get("/mirrored/{customer_id}", response_model=Mirrored)
    @guarded(subject="customer_id", mode="minimise")
    async def mirrored(customer_id: str) -> Any:
        return Mirrored.model_validate(record())

    @api.get("/plain/{customer_id}", response_model=Record)
    @guarded(subject="customer_id", mode="minimise")
    async def plain(customer_id: str) -> Any:
        return record(contact=None, alt="text")

    api.add_middleware(GuardMiddleware, settings=settings_)
    return api


def test_no_key_outside_the_response_model_leaves_a_minimised_route(
        tmp_path: Path, keys: Any) -> None:
    token = keys.mint(sub=CALLER)
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
    paths = ("/own/c-1", "/loose/c-1", "/mirrored/c-1", "/plain/c-1")

    def calls(base: str) -> list[httpx.Response]:
        return [httpx.get(base + path, headers=headers, timeout=10) for path in paths]

    answers = served(app(guard_settings(tmp_path, keys)), calls)  # type: ignore[arg-type]
    assert answers is not None, "the app refused to start"
    for path, answer in zip(paths, answers, strict=True):
        assert answer.status_code == 200, (path, answer.text)
        assert SECRET not in answer.text, (path, answer.text)
        assert EMAIL not in answer.text, (path, answer.text)
        assert answer.json()["name"] == "Ann", (path, answer.text)
    own = answers[0].json()
    assert own == {"id": "c-1", "name": "Ann", "contact": {"phone": "01632"}, "alt": "none",
                   "tags": ["vip"]}
    # what the model itself sends is kept: a null in place of a model, a string in a union
    assert answers[3].json() == {"id": "c-1", "name": "Ann", "contact": None, "alt": "text",
                                 "tags": ["vip"]}


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=4)
_EXTRA = st.dictionaries(st.text(min_size=1, max_size=4), _SCALARS, max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    contact=st.none() | st.fixed_dictionaries(
        {"email": st.just(EMAIL), "phone": st.none() | st.text(max_size=4)}),
    alt=st.text(max_size=4) | st.builds(dict, email=st.just(EMAIL)),
    tags=st.lists(st.text(max_size=3), max_size=3),
    extra_top=_EXTRA, extra_contact=_EXTRA,
    released=st.sets(st.sampled_from(["identity.name", "contact.email"])),
)
def test_what_the_model_sends_is_kept_and_nothing_else(
    contact: dict[str, Any] | None, alt: Any, tags: list[str], extra_top: dict[str, Any],
    extra_contact: dict[str, Any], released: set[str],
) -> None:
    plan = plan_for(Record)
    assert plan is not None
    value = Record.model_validate({"id": "c-1", "name": "Ann", "contact": contact, "alt": alt,
                                   "tags": tags})
    sent = TypeAdapter(Record).dump_python(value, mode="json")
    everything = frozenset({"identity.name", "contact.email"})
    assert plan.minimise(sent, everything) == sent  # the model's own answer, released whole
    planted = {**dict.fromkeys(extra_top, SECRET), **sent}
    if isinstance(planted.get("contact"), dict):
        planted["contact"] = {**dict.fromkeys(extra_contact, SECRET), **planted["contact"]}
    out = plan.minimise(planted, frozenset(released))
    assert SECRET not in str(out)
    assert (EMAIL in str(out)) == ("contact.email" in released and EMAIL in str(sent))
