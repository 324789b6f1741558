"""The request headers as the guard judges them: one purpose, however it was spelled."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from middleware.sidecar._proxy import fold


def judged_headers(scope: Scope, purpose_header: str) -> Headers:
    """The request's headers with every purpose field line joined into one value.

    A client may send the purpose twice, or as ``X_Purpose`` beside ``X-Purpose``
    (a WSGI server reads both as ``HTTP_X_PURPOSE``); judging the first copy
    while the upstream reads another would judge the wrong purpose. Every line
    whose name folds to ``purpose_header`` is joined with ``", "`` (RFC 9110
    §5.3), which no purpose key matches, so such a request is refused as
    ``malformed_request``.

    Args:
        scope: The ASGI scope of the request (or of the check request).
        purpose_header: The configured purpose header, e.g. ``x-purpose``.
    """
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    name = fold(purpose_header.encode())
    size = len(name)  # folding keeps the length: only names of this length can match
    lines = [(key, value) for key, value in raw if len(key) == size and fold(key) == name]
    if not lines or (len(lines) == 1 and lines[0][0].lower() == name):
        return Headers(scope=scope)
    kept = [(key.lower(), value) for key, value in raw if len(key) != size or fold(key) != name]
    return Headers(raw=[*kept, (name, b", ".join(value for _, value in lines))])
