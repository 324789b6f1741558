"""The upstream forwarder's header hygiene (streaming is tested against nginx elsewhere)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from middleware.sidecar._proxy import (
    HOP_BY_HOP,
    IDENTITY_HEADERS,
    IDENTITY_PREFIXES,
    fold,
    request_headers,
    response_headers,
)


def test_request_headers_drop_hop_by_hop_and_forged_identity() -> None:
    raw = [
        (b"Host", b"front.example"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"X-Guard-Caller", b"svc:admin"),
        (b"x-guard-decision-id", b"forged"),
        (b"X-Caller", b"svc:admin"),
        (b"Authorization", b"Bearer t"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Accept", b"*/*"),
    ]
    out = dict(
        request_headers(
            raw, strip=frozenset({b"x-caller"}), add={"x-guard-caller": "svc:crm"}, peer="127.0.0.9"
        )
    )
    assert out == {
        b"authorization": b"Bearer t",
        b"accept": b"*/*",
        b"x-forwarded-for": b"127.0.0.9",  # the peer the sidecar saw, never a client's chain
        b"x-forwarded-host": b"front.example",
        b"x-forwarded-proto": b"http",
        b"x-guard-caller": b"svc:crm",
    }


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [*sorted(HOP_BY_HOP), "X-Guard-Purpose", "x-guard-anything", "Accept", "X-Data"]
            ),
            st.text(alphabet="abc", max_size=5),
        ),
        max_size=12,
    )
)
def test_no_caller_supplied_guard_or_hop_header_survives(headers: list[tuple[str, str]]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    out = request_headers(raw, strip=frozenset(), add={}, peer=None)
    names = {name for name, _ in out}
    assert not names & {h.encode() for h in HOP_BY_HOP}
    assert not any(name.startswith(b"x-guard-") for name in names)
    kept = [
        (k.lower().encode(), v.encode()) for k, v in headers if k.lower() in ("accept", "x-data")
    ]
    if not any(k.lower() == "connection" for k, _ in headers):
        assert out == [*kept, (b"x-forwarded-proto", b"http")]


def test_response_headers_drop_hop_by_hop() -> None:
    raw = [(b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Content-Length", b"3")]
    assert response_headers(raw) == [(b"content-length", b"3")]


_IDENTITY_NAMES = sorted(IDENTITY_HEADERS) + [p + "user" for p in IDENTITY_PREFIXES]


@st.composite
def _spelled(draw: st.DrawFn, names: list[str]) -> str:
    """One of ``names`` as a client might spell it: any case, ``_`` for any ``-``."""
    name = draw(st.sampled_from(names))
    return "".join(
        draw(st.sampled_from(["-", "_"])) if c == "-" else draw(st.sampled_from([c, c.upper()]))
        for c in name
    )


@given(
    st.lists(
        st.tuples(
            st.one_of(_spelled(_IDENTITY_NAMES), st.sampled_from(["Accept", "X-Data"])),
            st.text(alphabet="xyz", min_size=1, max_size=5),
        ),
        max_size=12,
    )
)
def test_no_spelling_of_an_identity_header_reaches_the_upstream(
    headers: list[tuple[str, str]],
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    add = {"x-guard-caller": "svc:crm", "x-purpose": "relationship.management"}
    strip = frozenset({b"x-caller", b"x-purpose"})
    out = request_headers(raw, strip=strip, add=add, peer="1.2.3.4")
    ours = {b"x-forwarded-for", b"x-forwarded-proto", b"x-guard-caller", b"x-purpose"}
    identity = {n.encode() for n in IDENTITY_HEADERS}
    prefixes = tuple(p.encode() for p in IDENTITY_PREFIXES)
    for name, value in out:
        if fold(name) in identity or fold(name).startswith(prefixes):
            assert name in ours, name
            assert value in (b"1.2.3.4", b"http", b"svc:crm", b"relationship.management")
    assert sorted(n for n, _ in out if n in ours) == sorted(ours)  # each once, the sidecar's
