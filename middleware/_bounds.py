"""Bounds on request-derived values the guard stores or echoes, and the subject rule.

A value over its bound is refused (``malformed_request``) and stored cut: its
first ``bound - 1`` characters followed by ``…``, so no request can put more
than the bound into the audit trail or the problem body.
"""

from __future__ import annotations

import re

from middleware.identity import MAX_CALLER_ID
from middleware.routes import path_parameters

__all__ = [
    "CUT_MARK",
    "MAX_CALLER",
    "MAX_METHOD",
    "MAX_PURPOSE",
    "MAX_SUBJECT",
    "cut",
    "method_ok",
    "subject_ok",
]

MAX_PURPOSE = 200
"""Characters of a declared purpose (a purpose key is far shorter)."""
MAX_CALLER = MAX_CALLER_ID
"""Characters of a caller id (a token's ``sub``; the identity check bounds the proxy header)."""
MAX_METHOD = 32
"""Characters of an HTTP method."""
MAX_SUBJECT = 128
"""Characters of a data-subject id taken from the path."""
CUT_MARK = "…"
"""Ends a value that was cut to its bound."""

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1," + str(MAX_METHOD) + "}")
# RFC 3986 unreserved characters plus ":" and "@": a path segment's characters
# without percent-encoding and without the sub-delimiters ("!$&'()*+,;="), which
# servers and frameworks read as parameter separators (";", ","), and without
# whitespace, control characters or anything outside ASCII.
_SUBJECT = re.compile(r"[A-Za-z0-9._~:@-]{1," + str(MAX_SUBJECT) + "}")
_SUBJECT_PATH = re.compile(r"[A-Za-z0-9._~:@/-]{1," + str(MAX_SUBJECT) + "}")


def cut(value: str, bound: int) -> str:
    """``value`` itself when it fits ``bound`` characters, else its cut form (``bound`` long)."""
    if len(value) <= bound:
        return value
    return value[: bound - 1] + CUT_MARK


def method_ok(method: str) -> bool:
    """True for an HTTP method token of at most :data:`MAX_METHOD` characters."""
    return _METHOD.fullmatch(method) is not None


def subject_ok(value: str, template: str, name: str) -> bool:
    """True when a subject id can be audited as it is: no other reading of it is possible.

    The rule: 1 to :data:`MAX_SUBJECT` characters from ``A-Z a-z 0-9 - . _ ~ : @``,
    not ``.`` or ``..``; a ``{name:path}`` parameter may also hold ``/`` between
    such segments (no empty, ``.`` or ``..`` segment).

    Args:
        value: The parameter's value as the handler (or upstream) receives it.
        template: The route template the value was matched by.
        name: The subject parameter's name.
    """
    if name in path_parameters(template):
        if _SUBJECT_PATH.fullmatch(value) is None:
            return False
        return all(seg not in ("", ".", "..") for seg in value.split("/"))
    return _SUBJECT.fullmatch(value) is not None and value not in (".", "..")
