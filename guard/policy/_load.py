"""Load a policy: parse with pycasbin, lint, compile. A policy with errors never loads."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import casbin
from casbin.persist.adapter import Adapter

from guard._errors import PolicyError
from guard.policy._compile import compile_rows, is_recognised, parse_model
from guard.policy._compiled import CompiledPolicy
from guard.policy._findings import Finding, Severity
from guard.policy._lint import check_readable, lint_rows
from guard.policy._source import PolicySource, Row, parse_rows, read_source, resolve_policy_dir

_MAX_MESSAGE = 500
"""The longest first finding a load error names (characters; ``guard policy lint`` has all)."""


def _cut(text: str | None) -> str | None:
    """``text`` in at most :data:`_MAX_MESSAGE` characters (ending in … when cut)."""
    if text is None or len(text) <= _MAX_MESSAGE:
        return text
    return text[:_MAX_MESSAGE - 1] + "…"


class PolicyLoadError(PolicyError):
    """The policy has lint errors (or cannot be read); it was not loaded."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.severity is Severity.ERROR]
        first = errors[0]
        more = ""
        if len(errors) > 1:
            more = f" (and {len(errors) - 1} more error(s); run `guard policy lint`)"
        message, hint = (_cut(t) for t in (first.message, first.hint))  # may echo a value
        super().__init__(
            f"{message} [{first.code}]{more}",
            path=first.path,
            line=first.line,
            column=first.column,
            hint=hint,
        )


class SlowPathWarning(UserWarning):
    """The model is not the one the compiled engine implements; casbin decides."""


class _RowsAdapter(Adapter):  # type: ignore[misc]
    """Feeds already-parsed rows to casbin, as its file adapter would."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def load_policy(self, model: casbin.model.Model) -> None:
        for row in self._rows:
            sec = row.ptype[:1]
            if row.ptype in model.model.get(sec, {}):
                model.model[sec][row.ptype].policy.append(list(row.values))


def compile_source(source: PolicySource) -> CompiledPolicy:
    """Parse, lint and compile a policy from its texts.

    Raises:
        PolicyLoadError: the policy has lint errors.
        PolicyError: casbin cannot read the model.
    """
    model = parse_model(source.model_text, source.model_origin)
    check_readable(source)
    with _gc_paused():  # a large policy allocates many small acyclic objects
        rows = parse_rows(source.rules_text, source.rules_origin)
        findings = lint_rows(source, rows, model)
    if any(f.severity is Severity.ERROR for f in findings):
        raise PolicyLoadError(findings)
    enforcer = None
    if not is_recognised(model):
        warnings.warn(
            f"{source.model_origin}: model not recognised by the compiled engine; "
            "decisions use casbin's Enforcer (slow path)",
            SlowPathWarning,
            stacklevel=2,
        )
        enforcer = casbin.Enforcer(model, _RowsAdapter(rows))
    with _gc_paused():
        return compile_rows(source, rows, findings=tuple(findings), enforcer=enforcer)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (it would rescan every new row many times)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_policy(
    model_text: str, rules_text: str, origin: str = "<memory>"
) -> CompiledPolicy:
    """Compile a policy held in memory (e.g. pushed to PostgreSQL)."""
    return compile_source(
        PolicySource(model_text, rules_text, f"{origin}/model.conf", f"{origin}/rules.csv")
    )


def load_policy(policy_dir: Path | None = None) -> CompiledPolicy:
    """Load the policy folder (``./policies``, else the shipped policy, when None)."""
    return compile_source(read_source(resolve_policy_dir(policy_dir)))
