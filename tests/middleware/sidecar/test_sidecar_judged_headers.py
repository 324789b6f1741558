"""The headers the guard judges: one purpose however it was spelled, for every header list."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from middleware.sidecar._check import _target
from middleware.sidecar._headers import judged_headers

_NAMES = st.sampled_from([b"x-purpose", b"x_purpose", b"X-Purpose", b"x-purposes", b"x-purpos",
                          b"authorization", b"x-original-uri", b"x-original-method", b"host",
                          b"x_Purpose", b"xpurpose!"])
_HEADERS = st.lists(st.tuples(_NAMES, st.sampled_from([b"a.b", b"c", b"", b"/p?q"])),
                    max_size=8)


def _expected(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Every line whose name reads as x-purpose (any case, ``_`` for ``-``) joined into one."""
    same = [(k, v) for k, v in raw if k.lower().replace(b"_", b"-") == b"x-purpose"]
    if not same or (len(same) == 1 and same[0][0].lower() == b"x-purpose"):
        return raw
    kept = [(k.lower(), v) for k, v in raw if k.lower().replace(b"_", b"-") != b"x-purpose"]
    return [*kept, (b"x-purpose", b", ".join(v for _, v in same))]


@given(_HEADERS)
def test_every_spelling_of_the_purpose_is_judged_as_one_value(
        raw: list[tuple[bytes, bytes]]) -> None:
    assert judged_headers({"headers": raw}, "X-Purpose").raw == _expected(raw)


@given(_HEADERS)
def test_the_check_target_is_the_only_original_uri_with_its_method(
        raw: list[tuple[bytes, bytes]]) -> None:
    scope = {"headers": raw, "path": "/v1/check", "method": "GET"}
    uris = [v.decode() for k, v in raw if k == b"x-original-uri"]
    methods = [v.decode() for k, v in raw if k == b"x-original-method"]
    got = _target(scope, judged_headers(scope, "x-purpose"), "/v1/check")
    if not uris:
        assert got is None
    elif len(uris) > 1:
        assert got == ("GET", "")
    else:
        method = methods[0] if len(methods) == 1 else "" if methods else "GET"
        assert got == (method, uris[0])
