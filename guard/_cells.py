"""Values a client wrote, made safe for the places an auditor reads them."""

from __future__ import annotations

__all__ = ["csv_cell"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP: CSV injection)."""


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet reads as text: one that would start a formula gets a ``'`` first.

    Args:
        value: The value (an audit field may hold what a client wrote: a refused purpose).
    """
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
