"""Request targets the sidecar judges: what it accepts routes the same way upstream."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from middleware.sidecar._paths import judgeable_path

_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=8
)


@given(st.lists(_segment, min_size=1, max_size=6), st.text(max_size=10))
def test_accepted_paths_have_no_dot_segments_and_keep_their_segments(
    segments: list[str], query: str
) -> None:
    raw = (
        "/" + "/".join(quote(s, safe="") for s in segments) + ("?" + quote(query) if query else "")
    )
    path = judgeable_path(raw)
    if path is None:
        return
    parts = path.split("/")[1:]
    assert "." not in parts
    assert ".." not in parts
    # Encoded separators are refused, so the segments seen are the segments sent.
    assert parts == [unquote(quote(s, safe="")) for s in segments]


@pytest.mark.parametrize(
    "raw",
    [
        "/a/../b",
        "/a/./b",
        "/..",
        "/a/%2e%2e/b",
        "/a/%2E/b",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "relative",
        "",
        "/a%00b",
        "/a%ffb",
        "/healthz#/../customers/c-0001/payment",
        "/public/x?#/../customers/1",
        "//customers/1",
        "/a//b",
        "/customers/c-0001;foo",
        "/a%3Bb",
        "/a%25%32%65",
        "/a%3fb",
        "/a%23b",
        "/a%C0%AE",
        "*",
        "http://host/customers/1",
        "/a b",
        "/caf\u00e9",
        "/a\x7f",
        "/" + "a" * 4096,
    ],
)
def test_ambiguous_targets_are_refused(raw: str) -> None:
    assert judgeable_path(raw) is None


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/customers/42?x=1", "/customers/42"),
        ("/a%20b/", "/a b/"),
        ("/files/r%C3%A9sum%C3%A9", "/files/résumé"),
    ],
)
def test_plain_targets_are_decoded(raw: str, path: str) -> None:
    assert judgeable_path(raw) == path


_PIECES = st.sampled_from(
    ["/", "a", "Z", "0", ".", "..", "%", "%2e", "%2F", "%5c", "%25", "%41", "%3B", "%C3%A9",
     "%E2%82%AC", "%ff", "%C0%AF", "#", "?", ";", "=", " ", "\x00", "\x7f", "\\", "\u00e9",
     "~", ":", "@", "-"]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_an_accepted_target_names_one_path_for_every_server(raw: str) -> None:
    path = judgeable_path(raw)
    if path is None:
        return
    route = raw.split("?", 1)[0]
    assert raw.startswith("/")
    assert "#" not in raw
    assert path == unquote(route, errors="strict")  # as uvicorn and Starlette decode it
    assert unquote(path) == path  # a second decoding finds nothing more
    segments = path.split("/")[1:]
    assert not {".", ".."} & set(segments)  # no dot segment to resolve
    assert "" not in segments[:-1]  # no empty segment to merge
    assert not any(c in path for c in ";\\")
    assert all(0x20 <= ord(c) != 0x7F for c in path)
