"""The one framing a request body forwarded by the sidecar may have."""

from __future__ import annotations

from collections.abc import Iterable

AMBIGUOUS_FRAMING = (
    "one framing only: a Content-Length of digits, or Transfer-Encoding: chunked alone, "
    "never both, never twice"
)
"""What a refused request's framing must be (docs/sidecar.md says the same)."""


def framing_ok(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the request's body can be read one way only.

    A request is framed by at most one ``Content-Length`` line (digits) or at most
    one ``Transfer-Encoding`` line that is ``chunked`` alone (any case, blanks
    around it), never both. A server that reads a chunked body beside a length
    (uvicorn's h11 server does) would otherwise have judged a body the upstream
    may read another way.

    Args:
        headers: The request's raw header lines (ASGI ``scope["headers"]``).
    """
    length = coding = 0
    for name, value in headers:
        low = name.lower()
        if low == b"content-length":
            length += 1
            if not value.strip(b" \t").isdigit():
                return False
        elif low == b"transfer-encoding":
            coding += 1
            if value.strip(b" \t").lower() != b"chunked":
                return False
    return length + coding <= 1
