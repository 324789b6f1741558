"""Request targets the sidecar can judge the same way the upstream will route them."""

from __future__ import annotations

import re
from urllib.parse import unquote

# Encoded separators and dot segments make the path the guard matches differ
# from the one the upstream routes (``/public/..%2fcustomers/1``); refuse them.
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def judgeable_path(raw: str) -> str | None:
    """The decoded path of a request target (query dropped), or None if it is ambiguous.

    Ambiguous: not absolute, an encoded ``/``, ``\\`` or ``.``, a control character,
    or a ``.``/``..`` segment.
    """
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or _ENCODED_SEPARATOR.search(path):
        return None
    try:
        decoded = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(decoded):
        return None
    if any(seg in (".", "..") for seg in decoded.split("/")):
        return None
    return decoded
