"""Lint of the survival rows: ``g3, purpose, survives:PERIOD`` (POLICY-SPEC §4)."""

from __future__ import annotations

from guard.policy._lint_base import Linter
from guard.policy._lint_trees import Purposes
from guard.policy._source import Row
from guard.policy._survival import SURVIVES_PREFIX, valid_period

_PERIOD_HINT = "a number of years, months or days (6y, 18m, 90d) or 'unlimited'"


def survival_rows(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Split ``g3`` rows into lawful-basis rows and survival rows."""
    bases: list[Row] = []
    survival: list[Row] = []
    for row in rows:
        (survival if row.values[1].startswith(SURVIVES_PREFIX) else bases).append(row)
    return bases, survival


def lint_survival(lint: Linter, rows: list[Row], purposes: Purposes) -> None:
    """A known purpose or grouping node, a readable period, one row per node."""
    seen: dict[str, Row] = {}
    for row in rows:
        purpose, period = row.values[0], row.values[1].removeprefix(SURVIVES_PREFIX)
        if purpose not in purposes.tree:
            lint.error("unknown-key", row, 0, f"purpose {purpose!r} is not in the purpose tree",
                       f"declare it: g2, {purpose}, <parent>")
            continue
        if not valid_period(period):
            lint.error("bad-survival-period", row, 1, f"survival period {period!r} is not "
                       "readable", _PERIOD_HINT)
            continue
        if not purposes.declarable_under(purpose):
            lint.error("survival-without-purpose", row, 0, f"{purpose!r} has no declarable "
                       "purpose at or below it: the survival row has no effect",
                       "name a purpose with a lawful basis, or its grouping node")
            continue
        first = seen.setdefault(purpose, row)
        if first is not row:
            lint.error("duplicate-survival", row, 1, f"{purpose!r} already has a survival "
                       f"period on line {first.line}", "keep one survival row per purpose")
