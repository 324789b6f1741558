"""Bounds on request-derived values the guard stores or echoes, and the subject rule.

A value over its bound is refused (``malformed_request``) and stored cut: its
first ``bound - 1`` characters followed by ``…``, so no request can put more
than the bound into the audit trail or the problem body.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from guard._subject_rule import MAX_SUBJECT, SUBJECT_CHARS, subject_id_ok
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
    "read_limited",
    "subject_ok",
]

MAX_PURPOSE = 200
"""Characters of a declared purpose (a purpose key is far shorter)."""
MAX_CALLER = MAX_CALLER_ID
"""Characters of a caller id (a token's ``sub``; the identity check bounds the proxy header)."""
MAX_METHOD = 32
"""Characters of an HTTP method."""
CUT_MARK = "…"
"""Ends a value that was cut to its bound."""

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1," + str(MAX_METHOD) + "}")
# The subject rule is guard._subject_rule's; a {name:path} parameter adds "/".
_SUBJECT_PATH = re.compile(f"[/{SUBJECT_CHARS}]{{1,{MAX_SUBJECT}}}")


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
    return subject_id_ok(value)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; a chunked body, or one whose length was not declared, is read chunk by
    chunk and dropped the moment it passes the limit, so a client can never make
    the server hold more than ``limit`` bytes plus one chunk.

    Args:
        request: The request whose body to read.
        limit: The most bytes accepted.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
