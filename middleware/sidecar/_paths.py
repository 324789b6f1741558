"""Request targets the sidecar judges exactly as the upstream will route them, or refuses.

A target is accepted only in RFC 9112 origin-form (``/path?query``) spelled so
that every common server derives the same path from it: no fragment, no dot
segment, no empty segment, no ``;`` path parameter, no raw character in the
path outside RFC 3986's ``pchar``, and no percent-encoding of a byte that could
change the route (``/``, ``\\``, ``.``, ``%``, ``;``, ``?``, ``#``, control
characters), of an unreserved character (a letter, a digit, ``-``, ``_``, ``~``: no
client need encode one, and Express routes the path as sent, so ``/customers/%73tats``
would run its ``/customers/:id`` while the guard judged ``/customers/stats``) or of a
byte that is not UTF-8. The query may hold any visible ASCII but
``#``. What is left decodes to one path, the one the guard matches.
:data:`TARGET_PATTERN` is that rule as one regular expression; the OpenAPI
document publishes the same pattern.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MAX_TARGET = 4096
"""The longest request target judged (twice what browsers and CDNs reliably carry)."""

_HEX = "[0-9A-Fa-f]"
_CONT = f"%[89ABab]{_HEX}"  # a UTF-8 continuation byte, 80-BF
# Percent-encoded printable ASCII except % # . / ; ? \ and the unreserved letters, digits,
# - _ ~ (20-7E without 23 25 2D-39 3B 3F 41-5A 5C 5F 61-7A 7E).
_ASCII = "%(?:2[0-246-9A-Ca-c]|3[AaC-Ec-e]|40|5[BbDdEe]|60|7[B-Db-d])"
# Percent-encoded UTF-8 sequences of two to four bytes (RFC 3629: no overlongs, no surrogates).
_UTF8 = (
    f"%[Cc][2-9A-Fa-f]{_CONT}|%[Dd]{_HEX}{_CONT}"
    f"|%[Ee]0%[ABab]{_HEX}{_CONT}|%[Ee][1-9A-Ca-c]{_CONT}{_CONT}"
    f"|%[Ee][Dd]%[89]{_HEX}{_CONT}|%[Ee][EFef]{_CONT}{_CONT}"
    f"|%[Ff]0%[9ABab]{_HEX}{_CONT}{_CONT}|%[Ff][1-3]{_CONT}{_CONT}{_CONT}"
    f"|%[Ff]4%8{_HEX}{_CONT}{_CONT}"
)
_NODOT = f"(?:[A-Za-z0-9\\-_~!$&'()*+,=:@]|{_ASCII}|{_UTF8})"
_ANY = f"(?:[.]|{_NODOT})"
# A segment is not empty and not "." or "..": dots alone only three or more.
_SEGMENT = f"(?:[.]{{0,2}}{_NODOT}{_ANY}*|[.]{{3,}}{_ANY}*)"
# The query does not move a route: any visible ASCII but "#" (what clients send raw: [] {} |).
_QUERY = "[!-\"$-~]"

TARGET_PATTERN = f"^(?:/|(?:/{_SEGMENT})+/?)(?:[?]{_QUERY}*)?$"
"""An origin-form request target the guard judges exactly as the upstream routes it."""

_TARGET = re.compile(TARGET_PATTERN)

SEGMENT_PATTERN = "^(?:[.]{0,2}[A-Za-z0-9_~-][A-Za-z0-9._~-]*|[.]{3,}[A-Za-z0-9._~-]*)$"
"""One path segment of unreserved characters, never ``.`` or ``..``: what the OpenAPI
document promises for Envoy's appended path, a parameter that cannot carry ``/``."""

CHECK_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
"""The methods a check request may use (Envoy sends the original's); others get 405."""

METHOD_PATTERN = "^[A-Z]{1,20}$"
"""A request method as nginx and the sidecar's own server accept it: upper-case letters."""

_METHOD = re.compile(METHOD_PATTERN)


def judgeable_path(raw: str) -> str | None:
    """The decoded path of a request target (query dropped), or None if it is ambiguous.

    Args:
        raw: The target as sent on the request line, e.g. ``/customers/42?x=1``.
    """
    if len(raw) > MAX_TARGET or not _TARGET.fullmatch(raw):
        return None
    path = raw.split("?", 1)[0]
    # The pattern admits only well-formed UTF-8 escapes of characters that cannot move a route.
    return unquote(path, errors="strict") if "%" in path else path


def judgeable_method(raw: str) -> str | None:
    """The method as given when it is a plain upper-case token, else None.

    Args:
        raw: The method, e.g. ``GET`` from ``X-Original-Method``.
    """
    return raw if _METHOD.fullmatch(raw) else None
