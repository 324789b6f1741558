"""A judged answer, as no shared cache may keep it (``Cache-Control: private``).

A shared cache (nginx's ``proxy_cache``, a CDN) in front of a guarded service that
kept an answer would serve it to the next caller without a decision or an audit
event. The ASGI middleware and the sidecar both send every answer they judged
through :func:`private_answer`; an answer on a public route passes as it came.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["private_answer"]

# Headers by which an answer asks a shared cache (nginx's ``proxy_cache``, a CDN) to keep
# it for the next caller, ahead of Cache-Control (RFC 9213; nginx's own, Akamai's, Fastly's).
_SHARED_CACHE_HEADERS = frozenset({b"cdn-cache-control", b"surrogate-control",
                                   b"x-accel-expires", b"edge-control"})
_SHARED_DIRECTIVES = frozenset({b"public", b"s-maxage", b"proxy-revalidate", b"private"})
_PRIVATE = (b"cache-control", b"private")
NAMES = 512
"""Header names remembered as passing unchanged (then forgotten all at once)."""
_passing: set[bytes] = set()
"""Header names seen that the answer keeps as they came (neither ``Cache-Control`` nor one
that speaks to shared caches): that depends on the name's bytes alone, and a framework
sends the same few names every time."""


def private_answer(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer judged for one caller and purpose, as no shared cache may keep it.

    ``Cache-Control`` says ``private`` (``public``, ``s-maxage`` and
    ``proxy-revalidate`` removed; the other directives, ``no-store`` among them,
    kept) and the headers that speak to shared caches ahead of it are dropped.
    Header names are compared without regard to case and kept as they came.

    Args:
        headers: The answer's headers.
    """
    pairs = headers if type(headers) is list else list(headers)
    passing = _passing
    try:  # the usual answer: every name one seen passing before, kept as it came
        for pair in pairs:
            if pair[0] not in passing:
                return _rewritten(pairs)
    except (TypeError, IndexError, KeyError):  # not a pair of bytes: looked at below
        return _rewritten(pairs)
    out = pairs.copy() if pairs is headers else pairs
    out.append(_PRIVATE)
    return out


def _rewritten(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`private_answer`, each header looked at (the names that pass remembered)."""
    out: list[tuple[bytes, bytes]] = []
    kept: list[bytes] | None = None
    passing = _passing
    for name, value in headers:
        low = name if name.islower() else name.lower()  # a framework's names are lower-case
        if low == b"cache-control":
            if kept is None:
                kept = []
            for part in value.split(b","):
                directive = part.strip()
                key = directive.split(b"=", 1)[0].strip().lower()
                if directive and key not in _SHARED_DIRECTIVES:
                    kept.append(directive)
        elif low not in _SHARED_CACHE_HEADERS and not low.endswith(b"-cdn-cache-control"):
            out.append((name, value))
            if type(name) is bytes and name not in passing:
                if len(passing) >= NAMES:
                    passing.clear()
                passing.add(name)
    out.append(_PRIVATE if not kept else (b"cache-control", b", ".join([b"private", *kept])))
    return out
