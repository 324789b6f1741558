"""``quick_init``: the request path's frozen dataclasses build as their own ``__init__`` does."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard._types import Decision, Request, quick_init
from middleware._enforce import Outcome
from middleware._router import Resolved

CLASSES = [Request, Decision, Outcome, Resolved]
values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.tuples(st.integers()))


def _reference(cls: type) -> type:
    """The same fields as a plain frozen slots dataclass (its generated ``__init__``)."""
    spec = [(f.name, Any, dataclasses.field(default=f.default))
            if f.default is not dataclasses.MISSING else (f.name, Any)
            for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(f"Reference{cls.__name__}", spec, frozen=True, slots=True)


@given(st.sampled_from(CLASSES), st.data())
def test_builds_what_the_dataclass_init_builds(cls: type, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    given_count = data.draw(st.integers(len(required), len(fields)))
    args = [data.draw(values) for _ in range(given_count)]
    by_keyword = data.draw(st.booleans())
    reference = _reference(cls)
    if by_keyword:
        kwargs = {f.name: v for f, v in zip(fields, args, strict=False)}
        built, expected = cls(**kwargs), reference(**kwargs)
    else:
        built, expected = cls(*args), reference(*args)
    assert [getattr(built, f.name) for f in fields] == [getattr(expected, f.name)
                                                         for f in fields]
    assert built == cls(*[getattr(built, f.name) for f in fields])
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields[0].name, 1)
    if all(isinstance(getattr(built, f.name), int | str | tuple | type(None)) for f in fields):
        assert hash(built) == hash(cls(*[getattr(built, f.name) for f in fields]))
        assert pickle.loads(pickle.dumps(built)) == built


@pytest.mark.parametrize("cls", CLASSES)
def test_refuses_what_the_dataclass_init_refuses(cls: type) -> None:
    fields = dataclasses.fields(cls)
    with pytest.raises(TypeError):
        cls()  # the required fields are missing
    with pytest.raises(TypeError):
        cls(*range(len(fields) + 1))  # one too many
    with pytest.raises(TypeError):
        cls(*range(len(fields)), nope=1)


def test_request_replace_keeps_working() -> None:
    request = Request("svc:crm", "relationship.management", ("contact",))
    assert dataclasses.replace(request, subject="c-1").subject == "c-1"


def test_only_frozen_slots_dataclasses_with_plain_fields() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Post:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, Factory, Post, int):
        with pytest.raises(TypeError):
            quick_init(cls)
