"""The policy: read with pycasbin, lint, compile to look-up tables, hold and reload."""

from __future__ import annotations

from guard.policy._compiled import Category, CompiledPolicy, Party, Purpose
from guard.policy._findings import Finding, Severity
from guard.policy._lint import has_errors, lint_policy, lint_source
from guard.policy._load import (
    PolicyLoadError,
    SlowPathWarning,
    compile_policy,
    compile_source,
    load_policy,
)
from guard.policy._source import PolicySource, Row, read_source, resolve_policy_dir

__all__ = [
    "Category",
    "CompiledPolicy",
    "Finding",
    "Party",
    "PolicyHolder",
    "PolicyLoadError",
    "PolicySource",
    "Purpose",
    "ReloadResult",
    "Row",
    "Severity",
    "SlowPathWarning",
    "compile_policy",
    "compile_source",
    "has_errors",
    "lint_policy",
    "lint_source",
    "load_policy",
    "read_source",
    "resolve_policy_dir",
]


def __getattr__(name: str) -> object:
    # PolicyHolder imports the engine, which imports this package's tables.
    if name in ("PolicyHolder", "ReloadResult"):
        from guard.policy import _holder

        return getattr(_holder, name)
    raise AttributeError(name)
