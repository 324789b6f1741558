"""A shipped policy with extra rules, for register tests."""

from __future__ import annotations

from pathlib import Path

from guard.policy import CompiledPolicy, PolicySource, compile_source

SHIPPED = Path(__file__).resolve().parents[3] / "policies"


def policy_with(extra: str) -> CompiledPolicy:
    """The shipped policy with ``extra`` rules lines appended."""
    rules = (SHIPPED / "rules.csv").read_text() + extra
    return compile_source(PolicySource((SHIPPED / "model.conf").read_text(), rules,
                                       str(SHIPPED / "model.conf"), "rules.csv"))
