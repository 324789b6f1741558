"""One small hierarchy of errors, each with a message a user can act on."""

from __future__ import annotations


class GuardError(Exception):
    """Base of every error the guard raises on purpose."""


class PolicyError(GuardError):
    """A policy file that cannot be loaded, with where and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        text = f"{where}{self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class AuditUnavailableError(GuardError):
    """The audit store could not durably take an event."""


class AuditTimeoutError(AuditUnavailableError):
    """An event was not durable in the time allowed; the journal may still write it."""


class ConfigError(GuardError):
    """A configuration value that is missing or wrong."""
