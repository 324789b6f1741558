"""``private_answer`` on any headers: the same answer as lower-casing every name first.

It skips lower-casing a name that is lower-case already (a framework's names are) and
adds a constant ``Cache-Control: private`` when no directive is kept; for every list of
headers its answer is the one the straightforward reading gives.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from middleware import _private
from middleware._private import private_answer

_SHARED = {b"cdn-cache-control", b"surrogate-control", b"x-accel-expires", b"edge-control"}
_DROPPED = {b"public", b"s-maxage", b"proxy-revalidate", b"private"}


def reference(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Every name lower-cased, every directive looked at: what the answer must be."""
    out, kept = [], []
    for name, value in headers:
        low = name.lower()
        if low == b"cache-control":
            for part in value.split(b","):
                directive = part.strip()
                if directive and directive.split(b"=", 1)[0].strip().lower() not in _DROPPED:
                    kept.append(directive)
        elif low not in _SHARED and not low.endswith(b"-cdn-cache-control"):
            out.append((name, value))
    out.append((b"cache-control", b", ".join([b"private", *kept])))
    return out


def _cased(name: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: bytes(c - 32 if u and 97 <= c <= 122 else c
                            for c, u in zip(name, upper, strict=True)))


_NAMES = st.sampled_from([b"cache-control", b"content-type", b"cdn-cache-control",
                          b"fastly-cdn-cache-control", b"surrogate-control",
                          b"x-accel-expires", b"edge-control", b"etag", b"x-1", b"123", b""]
                         ).flatmap(_cased) | st.binary(max_size=20)
_VALUES = st.sampled_from([b"public", b"private", b"no-store", b"max-age=60", b"S-MaxAge=5",
                           b"public, max-age=60", b" , no-cache ,", b"", b"text/plain"]
                          ) | st.binary(max_size=20)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_the_answer_is_the_one_of_lower_casing_every_name(
        headers: list[tuple[bytes, bytes]]) -> None:
    assert private_answer(headers) == reference(headers)


def test_an_answer_with_no_cache_directive_is_private() -> None:
    assert private_answer([(b"content-type", b"application/json")]) == [
        (b"content-type", b"application/json"), (b"cache-control", b"private")]


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
def test_the_answer_is_the_same_once_the_names_are_remembered(
        headers: list[tuple[bytes, bytes]]) -> None:
    first = private_answer(headers)
    assert private_answer(iter(headers)) == first == private_answer(headers) == reference(headers)


def test_the_names_remembered_are_bounded_and_only_those_that_pass() -> None:
    private_answer([(b"x-%d" % n, b"") for n in range(_private.NAMES + 10)])
    assert 0 < len(_private._passing) <= _private.NAMES
    private_answer([(b"Cache-Control", b"public"), (b"cdn-cache-control", b"max-age=9"),
                    (b"fastly-cdn-cache-control", b"x")])
    assert not {b"Cache-Control", b"cdn-cache-control",
                b"fastly-cdn-cache-control"} & _private._passing


def test_the_app_s_list_is_left_as_it_was() -> None:
    headers = [(b"content-type", b"text/plain")]
    private_answer(headers)
    private_answer(headers)
    assert headers == [(b"content-type", b"text/plain")]
