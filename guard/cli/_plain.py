"""Audit values shown in a terminal as text: control characters as visible escapes.

What a client wrote reaches the auditor's commands (a refused request's purpose is
recorded as declared, cut to its bound); servers pass escape and other control bytes in
header values, and a terminal acts on them (move the cursor, erase lines, hide text,
plant links). :func:`visible` writes each as ``\\xNN`` / ``\\uNNNN`` instead.
"""

from __future__ import annotations

import unicodedata

__all__ = ["visible"]

_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
"""Bidirectional controls: they reorder how the rest of a line reads."""


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {c: _escape(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI)}
_LINES = {**_TABLE}
del _LINES[ord("\n")]
_TABLE[ord("\\")] = "\\\\"  # so an escape shown is never taken for one written


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character written as an escape (``\\x1b``).

    Args:
        text: A value that may hold what a client wrote.
        lines: Keep line feeds and backslashes (a document, such as a Markdown report,
            whose own escapes must stand).
    """
    shown = text.translate(_LINES if lines else _TABLE)
    if shown.isascii() or not any(unicodedata.category(ch) == "Cs" for ch in shown):
        return shown
    return "".join(_escape(ord(ch)) if unicodedata.category(ch) == "Cs" else ch
                   for ch in shown)  # a lone surrogate (from a bad decoding) cannot print
