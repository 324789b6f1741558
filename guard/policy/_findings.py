"""A lint finding: what is wrong, where, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    """Errors refuse the load; warnings load."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint result.

    Args:
        severity: error (blocks loading) or warning.
        code: Stable identifier of the check that fired, e.g. ``grant-outside-ceiling``.
        message: What is wrong, in one sentence.
        path: The file.
        line: 1-based line, when the finding is about one line.
        column: 1-based column of the offending value.
        hint: How to fix it.
    """

    severity: Severity
    code: str
    message: str
    path: str
    line: int | None = None
    column: int | None = None
    hint: str | None = None

    @property
    def location(self) -> str:
        """``file:line:col`` (as much of it as is known)."""
        where = str(Path(self.path))
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity.value}: {self.message} [{self.code}]"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text
