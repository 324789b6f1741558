"""Lint: every problem of a policy, with file, line, column and a hint."""

from __future__ import annotations

from casbin.model import Model

from guard.policy._findings import Finding, Severity
from guard.policy._source import PolicySource, Row


def lint_rows(source: PolicySource, rows: list[Row], model: Model) -> list[Finding]:
    """Check the rows against the model; errors refuse the load, warnings do not."""
    findings: list[Finding] = []
    for row in rows:
        sec = row.ptype[:1]
        assertion = model.model.get(sec, {}).get(row.ptype) if sec in ("p", "g") else None
        if assertion is None:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "unknown-policy-type",
                    f"unknown policy type {row.ptype!r}",
                    source.rules_origin,
                    row.line,
                    row.columns[0],
                    "use one of the types defined in model.conf (p, g, g2, g3, g4, g5)",
                )
            )
            continue
        expected = len(assertion.tokens) if sec == "p" else assertion.value.count("_")
        if len(row.values) != expected:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "wrong-arity",
                    f"{row.ptype} takes {expected} values, this line has {len(row.values)}",
                    source.rules_origin,
                    row.line,
                    row.columns[0],
                )
            )
    return findings
