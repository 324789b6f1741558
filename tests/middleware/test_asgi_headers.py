"""The headers ``GuardMiddleware`` reads: only the wanted names, the first of repeats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from middleware.asgi import wanted_headers

WANTED = frozenset({b"authorization", b"x-purpose", b"x-caller", b"x-guard-proxy-secret"})
names = st.sampled_from([*WANTED, b"host", b"x-other", b"authorization-x", b"x-purpose "])
values = st.binary(max_size=12)


@given(st.lists(st.tuples(names, values), max_size=12))
def test_the_first_of_each_wanted_header_decoded(raw: list[tuple[bytes, bytes]]) -> None:
    expected: dict[str, str] = {}
    for name, value in raw:
        if name in WANTED and name.decode("latin-1") not in expected:
            expected[name.decode("latin-1")] = value.decode("latin-1")
    assert wanted_headers(raw, WANTED) == expected


def test_a_repeated_header_does_not_replace_the_first() -> None:
    raw = [(b"authorization", b"Bearer first"), (b"x-purpose", b"a.b"),
           (b"authorization", b"Bearer second"), (b"host", b"svc")]
    assert wanted_headers(raw, WANTED) == {"authorization": "Bearer first", "x-purpose": "a.b"}
