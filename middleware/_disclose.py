"""What ``/readyz`` tells a caller that proves no identity: no file-system path, no URL.

Readiness is served on the port every client reaches (the sidecar's own paths, the
service's public route); its texts are the guard's own messages, which name the
audit journal's folder, key files, policy files and store URLs. A verified caller
(an operator's token) reads them whole.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from middleware.identity import Authenticator, IdentityError

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")
_PATH = re.compile(r"[^\s'\"`,;()<>\[\]{}]*/[^\s'\"`,;()<>\[\]{}]*")
"""A word with a ``/`` in it: an absolute path, or a relative one (settings may name
``keys/jwks.json``, the journal folder ``.guard/audit-journal/<host>_<port>_<db>``)."""


def withheld(text: str) -> str:
    """``text`` without the file-system paths and URLs it names (a word holding a ``/``
    becomes its last name: ``…/END``; a URL ``<url>``), for a caller ``/readyz`` does not
    know."""
    text = _URL.sub("<url>", text)
    return _PATH.sub(lambda found: "…/" + found.group().rstrip("/").rsplit("/", 1)[-1], text)


def readiness_view(body: Any, full: bool) -> Any:
    """``/readyz``'s body as a caller sees it: whole for a verified caller, else every text
    with its paths and URLs withheld (:func:`withheld`)."""
    if full:
        return body
    if isinstance(body, str):
        return withheld(body)
    if isinstance(body, dict):
        return {key: readiness_view(value, full) for key, value in body.items()}
    if isinstance(body, list):
        return [readiness_view(value, full) for value in body]
    return body


def proves_a_caller(auth: Authenticator, request: Request) -> bool:
    """Whether ``request`` proves a caller (a token or a proxy's caller header)."""
    try:
        client = request.scope.get("client")
        auth.authenticate(request.headers, str(client[0]) if client else None)
    except IdentityError:
        return False
    return True
