"""The subject id rule: what a data subject's id may hold, in the register and the APIs."""

from __future__ import annotations

import re

__all__ = [
    "MAX_SUBJECT",
    "SUBJECT_PATTERN",
    "SUBJECT_RULE",
    "subject_id_ok",
    "subject_rule_error",
]

MAX_SUBJECT = 128
"""Characters of a data-subject id."""
SUBJECT_RULE = "1 to 128 characters from A-Z a-z 0-9 - . _ ~ : @, not '.' or '..'"
"""The rule in words, for error messages and API descriptions."""
# RFC 3986 unreserved characters plus ":" and "@": a path segment's characters
# without percent-encoding and without the sub-delimiters ("!$&'()*+,;="), which
# servers and frameworks read as parameter separators (";", ","), and without
# whitespace, control characters or anything outside ASCII.
SUBJECT_CHARS = "A-Za-z0-9._~:@-"
"""The characters a subject id may hold, as a regular-expression class body."""
SUBJECT_PATTERN = r"^(?:[A-Za-z0-9._~:@-]*[A-Za-z0-9_~:@-][A-Za-z0-9._~:@-]*|\.{3,})$"
"""The rule as one anchored pattern (for a JSON schema; the length is bounded apart)."""
_SUBJECT = re.compile(f"[{SUBJECT_CHARS}]{{1,{MAX_SUBJECT}}}")
_SHOWN = 60


def subject_id_ok(value: str) -> bool:
    """True when ``value`` follows the subject rule (:data:`SUBJECT_RULE`).

    Args:
        value: A data subject's id as given.
    """
    return _SUBJECT.fullmatch(value) is not None and value not in (".", "..")


def subject_rule_error(value: str) -> str:
    """One line naming ``value`` (escaped, cut) and the rule it breaks.

    Args:
        value: The refused subject id.
    """
    shown = repr(value) if len(value) <= _SHOWN else repr(value[:_SHOWN]) + "..."
    return f"subject id {shown} breaks the subject rule ({SUBJECT_RULE})"
