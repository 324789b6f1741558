"""Eleventh review: the field plan decides in a closed world.

The plan of a response model followed the type forms it knew (models, dataclasses,
lists, tuples, sets, iterables, dicts, unions, aliases, type variables) and took any
other for a value with no category: a generic of an unknown origin (a class of its own
made generic, serialised through ``__get_pydantic_core_schema__``: ``Wrapper[Contact]``)
or ``type[Contact]`` was sent as Pydantic sends it, with every email inside, while a
``deny`` route judged ``identity.name`` alone and a ``minimise`` route removed nothing
under it. A serializer function over a model (``WrapSerializer``, ``field_serializer``)
sent the model's values under keys the plan gave other categories. Now a type the plan
does not positively understand stops the start when a category-carrying type is anywhere
inside it. Checked for generated annotations, served by a real uvicorn through the guard
to a caller released ``identity.name`` but not ``contact.email``.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import typing
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Final, Generic, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    WrapSerializer,
    computed_field,
    create_model,
    field_serializer,
    model_serializer,
)
from pydantic_core import PydanticSerializationError, core_schema
from tokenkit import guard_settings

from guard._errors import PolicyError
from middleware import Category, GuardMiddleware, guarded
from middleware.fields import plan_for, route_fields
from tests.security.test_red4_fields import CALLER, PURPOSE, asked_of_a_deny_route, served

EMAIL = "ann@example.com"
NAME_CAT, EMAIL_CAT = Category("identity.name"), Category("contact.email")
Name = Annotated[str, NAME_CAT]
Email = Annotated[str, EMAIL_CAT]
T = TypeVar("T")
ByContact = TypeVar("ByContact", bound="Person")


class Person(BaseModel):
    name: Name
    email: Email


class Wrapper(Generic[T]):
    """A container of its own, sent as what it holds (its core schema says so)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        args = typing.get_args(source)
        inner = handler.generate_schema(args[0]) if args else core_schema.any_schema()
        return core_schema.no_info_after_validator_function(
            cls, inner, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda held: held.value, return_schema=inner))


class Hidden:
    """A class whose core schema holds a model no annotation names."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        return handler.generate_schema(Person)


def _under_name(value: Any, handler: Any) -> Any:
    return {"name": json.dumps(handler(value))}  # everything, under a key of identity.name


Pair = tuple[Any, Any]  # (annotation, a JSON value of it, with the email wherever it can)
LEAVES: list[Pair] = [(str, "text"), (int, 1), (Name, "Ann"), (Email, EMAIL),
                      (Person, {"name": "Ann", "email": EMAIL})]


def _containers(inner: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    def wrap(make: Callable[[Any], Any], value: Callable[[Any], Any]
             ) -> st.SearchStrategy[Pair]:
        return inner.map(lambda pair: (make(pair[0]), value(pair[1])))

    return st.one_of(
        wrap(lambda t: list[t], lambda v: [v]),  # type: ignore[valid-type]
        wrap(lambda t: tuple[t, ...], lambda v: [v]),  # type: ignore[valid-type]
        wrap(lambda t: typing.Deque[t], lambda v: [v]),  # type: ignore[valid-type]  # noqa: UP006
        wrap(lambda t: t | None, lambda v: v),
        wrap(lambda t: typing.Union[t, str], lambda v: v),  # noqa: UP007
        wrap(lambda t: dict[str, t], lambda v: {"k": v}),  # type: ignore[valid-type]
        wrap(lambda t: Wrapper[t], lambda v: v),  # type: ignore[valid-type]
        wrap(lambda t: Annotated[t, EMAIL_CAT], lambda v: v),
        wrap(lambda t: Annotated[t, NAME_CAT], lambda v: v),
        wrap(lambda t: Annotated[t, WrapSerializer(_under_name)], lambda v: v),
    )


KEYS: st.SearchStrategy[Pair] = st.sampled_from([(str, "text"), (Email, EMAIL)]).map(
    lambda pair: (collections.Counter[pair[0]], {pair[1]: 1}))  # type: ignore[misc]
ANNOTATIONS = st.recursive(st.sampled_from(LEAVES) | KEYS, _containers, max_leaves=5)


def _model(annotation: Any) -> Any:
    return create_model("Doc", name=(Name, ...), field=(annotation, ...))


def _planned(model: Any) -> bool:
    try:
        plan_for(model)
    except PolicyError:
        return False
    return True


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=ANNOTATIONS)
def test_a_planned_model_never_sends_a_withheld_category(pair: Pair) -> None:
    annotation, value = pair
    model = _model(annotation)
    if not _planned(model):
        return  # refused at start
    plan = plan_for(model)
    assert plan is not None
    try:
        sent = TypeAdapter(model).dump_python(
            model.model_validate({"name": "Ann", "field": value}), mode="json")
    except PydanticSerializationError:  # a serializer around a Wrapper: the app answers 500
        return
    if EMAIL in json.dumps(sent):  # deny: the route is judged for the email's category
        assert "contact.email" in plan.categories, (annotation, sent)
    assert EMAIL not in json.dumps(plan.minimise(sent, frozenset({"identity.name"}))), (
        annotation, sent)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pair=ANNOTATIONS)
def test_a_served_route_refuses_at_start_or_never_sends_a_withheld_category(
        tmp_path_factory: pytest.TempPathFactory, keys: Any, pair: Pair) -> None:
    annotation, value = pair
    model = _model(annotation)
    api = FastAPI()

    @api.get("/deny/{customer_id}", response_model=model)
    @guarded(subject="customer_id")  # deny: the categories are the model's
    async def deny(customer_id: str) -> Any:
        return {"name": "Ann", "field": value}

    @api.get("/minimise/{customer_id}", response_model=model)
    @guarded(subject="customer_id", mode="minimise")
    async def minimise(customer_id: str) -> Any:
        return {"name": "Ann", "field": value}

    api.add_middleware(GuardMiddleware,
                       settings=guard_settings(tmp_path_factory.mktemp("closed"), keys))
    headers = {"authorization": f"Bearer {keys.mint(sub=CALLER)}", "x-purpose": PURPOSE}

    def calls(base: str) -> list[httpx.Response]:
        return [httpx.get(f"{base}/{mode}/c-1", headers=headers, timeout=10)
                for mode in ("deny", "minimise")]

    answers = served(api, calls)  # type: ignore[arg-type]
    if answers is None:
        assert not _planned(model), f"{annotation} refused at start with no PolicyError"
        return
    assert _planned(model)
    for answer in answers:  # type: ignore[union-attr]
        assert answer.status_code in (200, 403, 500), (annotation, answer.text)
        assert EMAIL not in answer.text, (annotation, answer.status_code, answer.text)


class Boxed(BaseModel):
    name: Name
    box: Wrapper[Person]


class Typed(BaseModel):
    name: Name
    kind: type[Person]


class Held(BaseModel):
    name: Name
    hidden: Hidden


class Bound(BaseModel, Generic[ByContact]):
    name: Name
    box: Wrapper[ByContact]


@dataclasses.dataclass
class Fixed:
    name: Name
    person: Final[Person]  # a dataclass sends a Final field as any other


class Renamed(BaseModel):
    name: Name
    person: Annotated[Person, WrapSerializer(_under_name)]


class Serialised(BaseModel):
    name: Name
    person: Person

    @field_serializer("person")
    def _person(self, person: Person) -> dict[str, str]:
        return {"name": person.email}


class Computed(BaseModel):
    name: Name

    @computed_field  # type: ignore[prop-decorator]
    @property
    def person(self) -> Person:
        return Person(name=self.name, email=EMAIL)

    @field_serializer("person")
    def _person(self, person: Person) -> dict[str, str]:
        return {"name": person.email}


class Starred(BaseModel):
    name: Name
    person: Person

    @field_serializer("*")  # every field's
    def _every(self, value: Any) -> Any:
        return {"name": value.email} if isinstance(value, Person) else value


with warnings.catch_warnings():  # json_encoders: deprecated, and still applied
    warnings.simplefilter("ignore", DeprecationWarning)

    class Encoded(BaseModel):
        model_config = ConfigDict(json_encoders={Person: lambda person: {"name": person.email}})
        name: Name
        person: Person

    class Dated(BaseModel):  # an encoder of a leaf changes how a value is written, not its keys
        model_config = ConfigDict(json_encoders={datetime.date: lambda day: day.isoformat()})
        name: Name
        person: Person


@pytest.mark.parametrize(("model", "where"), [
    (Starred, r"Starred\.person: Person carries .*serializer function"),
    (Encoded, r"Encoded\.person: Person carries .*serializer function"),
    (Boxed, r"Boxed\.box: .*Wrapper\[.*Person\] carries contact\.email"),
    (Typed, r"Typed\.kind: type\[.*Person\] carries contact\.email"),
    (Held, r"Held\.hidden: Hidden carries contact\.email"),
    (Bound, r"Bound\.box: .*Wrapper\[~ByContact\] carries contact\.email"),
    (Fixed, r"Fixed\.person: typing\.Final\[.*Person\] carries contact\.email"),
    (Renamed, r"Renamed\.person: Person carries .*serializer function"),
    (Computed, r"Computed\.person: Person carries .*serializer function"),
    (Serialised, r"Serialised\.person: Person carries .*serializer function"),
])
def test_a_category_in_a_form_the_plan_does_not_follow_stops_the_start(
        model: Any, where: str) -> None:
    with pytest.raises(PolicyError, match=where) as refused:
        plan_for(model)
    assert "hint:" in str(refused.value)


class Leaves(BaseModel):
    name: Name
    when: Annotated[str, EMAIL_CAT, WrapSerializer(lambda v, h: h(v).lower())]
    kind: typing.Literal["a", "b"]
    box: Wrapper[int]
    counts: collections.Counter[str]
    tally: type[int]


def test_a_serializer_of_every_field_or_of_a_model_type_stops_the_start() -> None:
    """``field_serializer("*")`` and ``json_encoders`` keyed by a model reach every field
    (or every field of that type) without naming it: both sent the email under
    ``person.name`` while the plan judged it ``identity.name``."""
    for model in (Starred, Encoded):
        sent = TypeAdapter(model).dump_python(
            model(name="Ann", person=Person(name="Ann", email=EMAIL)), mode="json")
        assert sent["person"] == {"name": EMAIL}  # what the plan must not take for a name
    plan = plan_for(Dated)
    assert plan is not None
    assert plan.categories == ("identity.name", "contact.email")


def test_leaves_and_unknown_forms_with_no_category_inside_are_planned() -> None:
    plan = plan_for(Leaves)
    assert plan is not None
    assert plan.categories == ("identity.name", "contact.email")


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Name


class Holder(BaseModel):
    name: Name
    items: list[Loose] = []


class Mirrored(BaseModel):
    name: Name

    @model_serializer(mode="wrap")
    def _mirror(self, handler: Any) -> dict[str, Any]:
        return {**handler(self), "mail": EMAIL}  # a key no field names


class MirrorHolder(BaseModel):
    name: Name
    items: list[Mirrored] = []


@pytest.mark.parametrize(("model", "why"), [
    (Loose, "Loose allows extra keys"), (Holder, "Loose allows extra keys"),
    (Mirrored, r"Mirrored serialises itself"), (MirrorHolder, r"Mirrored serialises itself")])
def test_a_deny_route_whose_model_sends_keys_beyond_its_fields_stops_the_start(
        tmp_path_factory: pytest.TempPathFactory, keys: Any, model: Any, why: str) -> None:
    value = {"name": "Ann", "mail": EMAIL, "items": [{"name": "Ann", "mail": EMAIL}]}
    settings_ = guard_settings(tmp_path_factory.mktemp("loose"), keys)
    answer = asked_of_a_deny_route(model, value, settings_, keys.mint(sub=CALLER))
    # Before: 200 with the email under a key no field names (judged for identity.name alone).
    assert answer is None, f"{answer.status_code} {answer.text}"
    with pytest.raises(PolicyError, match=why + r".*hint: "):
        route_fields((), "deny", APIRoute("/x", lambda: None, response_model=model), "/x")
    assert route_fields((), "minimise", APIRoute("/x", lambda: None, response_model=model),
                        "/x")[0] == ("identity.name",)  # minimised: the extra keys removed
