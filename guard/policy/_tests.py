"""Policy test cases: requests with the decision and reason the policy must give.

``tests.csv`` columns: caller, purpose, categories (``;``-separated), action,
expected (``allow`` or ``deny``), reason, optional note. ``#`` starts a
comment; a first row starting with ``caller`` is a header.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from guard._errors import PolicyError
from guard._types import Action, Decision, Reason, Request
from guard.engine import decide
from guard.policy._compiled import CompiledPolicy
from guard.policy._source import field_columns

CASES_FILE = "tests.csv"
_COLUMNS = ("caller", "purpose", "categories", "action", "expected", "reason", "note")
_EXPECTED = {"allow": True, "deny": False}


@dataclass(frozen=True, slots=True)
class Case:
    """One policy test case and where it stands in its file."""

    path: str
    line: int
    request: Request
    allowed: bool
    reason: Reason
    note: str = ""

    @property
    def location(self) -> str:
        """``tests.csv:12``."""
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case and the decision the policy gave."""

    case: Case
    decision: Decision

    @property
    def passed(self) -> bool:
        """Same decision and same reason as expected."""
        return (self.decision.allowed == self.case.allowed
                and self.decision.reason is self.case.reason)

    def describe(self) -> str:
        """One line for a failure: where, what was asked, expected and got."""
        req = self.case.request
        want = f"{'allow' if self.case.allowed else 'deny'} ({self.case.reason.value})"
        got = f"{'allow' if self.decision.allowed else 'deny'} ({self.decision.reason.value})"
        text = (f"{self.case.location}: FAIL {req.caller} {req.purpose} "
                f"{';'.join(req.categories)} {req.action.value}: expected {want}, got {got}")
        return text + (f" -- {self.case.note}" if self.case.note else "")


def _parse(values: list[str], line: str, number: int, path: str) -> Case:
    columns = field_columns(line)

    def fail(index: int, message: str, hint: str) -> PolicyError:
        column = columns[index] if index < len(columns) else len(line) + 1
        return PolicyError(message, path=path, line=number, column=column, hint=hint)

    if not 6 <= len(values) <= 7:
        raise fail(min(len(values), 6), f"expected 6 or 7 columns, found {len(values)}",
                   "caller, purpose, categories, action, expected, reason[, note]")
    caller, purpose, cats, action, expected, reason = values[:6]
    categories = tuple(c.strip() for c in cats.split(";") if c.strip())
    if not caller:
        raise fail(0, "no caller", "e.g. svc:crm")
    if not categories:
        raise fail(2, "no category", "categories are separated by ';'")
    try:
        act = Action(action or "read")
    except ValueError:
        raise fail(3, f"action must be read or write, not {action!r}", "read or write") from None
    if expected not in _EXPECTED:
        raise fail(4, f"expected must be allow or deny, not {expected!r}", "allow or deny")
    allowed = _EXPECTED[expected]
    try:
        why = Reason(reason or ("allowed" if allowed else ""))
    except ValueError:
        raise fail(5, f"unknown reason {reason!r}", "a reason code of POLICY-SPEC §3, "
                   "e.g. category_not_granted") from None
    if allowed != (why is Reason.ALLOWED):
        raise fail(5, f"expected {expected} does not go with reason {why.value!r}",
                   "allow goes with 'allowed'; deny with a denial reason")
    note = values[6] if len(values) > 6 else ""
    return Case(path, number, Request(caller, purpose, categories, act), allowed, why, note)


def parse_cases(text: str, path: str = CASES_FILE) -> list[Case]:
    """Parse test cases; a malformed row raises a PolicyError naming line and column."""
    cases: list[Case] = []
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values = [v.strip() for v in next(csv.reader([line], skipinitialspace=True))]
        if not header_seen and values and values[0] == _COLUMNS[0]:
            header_seen = True
            continue
        header_seen = True
        cases.append(_parse(values, line, number, path))
    return cases


def read_cases(path: Path) -> list[Case]:
    """Read a cases file; a missing or unreadable file is a PolicyError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"test cases not found: {path}", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read test cases: {exc}", path=str(path)) from None
    return parse_cases(text, str(path))


def run_cases(policy: CompiledPolicy, cases: list[Case]) -> list[CaseResult]:
    """Decide every case against the policy."""
    return [CaseResult(case, decide(policy, case.request)) for case in cases]


def summary(results: list[CaseResult]) -> str:
    """``N passed, N failed``."""
    failed = sum(not r.passed for r in results)
    return f"{len(results) - failed} passed, {failed} failed"
