"""Lint of ``routes.csv``: every row the route loader refuses, and unknown categories.

Errors are exactly the rows :class:`middleware.routes.RouteTable` refuses to load
(the sidecar would not start): lint asks the loader itself, so a new check there
is a lint error at once. Warnings are categories the policy does not know, rows
that take a changing method (``PUT``, ``PATCH``, ``DELETE``, ``*``) as a read, and rows
whose paths the table refuses because an earlier row would take them upstream.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

from guard._errors import PolicyError
from guard.policy._compiled import SPECIAL
from guard.policy._findings import Finding, Severity
from guard.policy._lint_base import Tree
from guard.policy._source import field_columns, field_starts

if TYPE_CHECKING:
    from middleware.routes import RouteRule

ROUTES_FILE = "routes.csv"
MAX_ROUTE_ERRORS = 200
"""Stop looking for more refused rows after this many (each search re-reads the file)."""


def lint_routes(path: Path, categories: Tree) -> list[Finding]:
    """Errors for every row the route loader refuses; warnings for unknown categories,
    changing methods judged as reads and rows an earlier row takes."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(Severity.ERROR, "routes-unreadable", f"cannot read routes: {exc}",
                        str(path), hint="fix or remove the file")]
    errors, rules = route_errors(text, str(path))
    return [*errors, *_category_warnings(text, str(path), categories),
            *_action_warnings(text, str(path)), *_taken_warnings(rules, text, str(path))]


def missing_routes(path: Path) -> Finding:
    """The error for a configured routes file that is not there (the sidecar needs it)."""
    return Finding(Severity.ERROR, "routes-missing", "routes file not found", str(path),
                   hint="create it or fix sidecar.routes / GUARD_SIDECAR__ROUTES")


def route_errors(text: str, origin: str) -> tuple[list[Finding], list[RouteRule]]:
    """Every error the route loader raises for ``text``, one per refused row, and the rules
    it reads when it refuses none (else none).

    The loader stops at its first error; the row it names is blanked (line numbers
    kept) and the text read again, until it loads.
    """
    from middleware.routes import RouteTable, parse_routes

    lines = text.splitlines()
    findings: list[Finding] = []
    while len(findings) < MAX_ROUTE_ERRORS:
        try:
            rules = parse_routes("\n".join(lines), origin)
            RouteTable(rules)
            if not findings:
                return findings, rules
            break
        except (PolicyError, ValueError) as exc:
            error = exc if isinstance(exc, PolicyError) else PolicyError(str(exc), path=origin)
            findings.append(Finding(Severity.ERROR, "route-refused", error.message, origin,
                                    error.line, error.column, error.hint or
                                    "the sidecar refuses to start with this file"))
            line = error.line
            if line is None or not 1 <= line <= len(lines) or not lines[line - 1].strip():
                break  # nothing left to blank: the error is not about one row
            lines[line - 1] = ""
    return findings, []


def _category_warnings(text: str, origin: str, categories: Tree) -> list[Finding]:
    """Warnings for route categories that are unknown or special; never raises on odd lines."""
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        starts = field_starts(line)
        if len(starts) < 3:
            continue  # malformed: an error above
        end = starts[3] - 1 if len(starts) > 3 else len(line)
        raw = line[starts[2]:end]
        for found in re.finditer(r"[^\s;|\"]+", raw):
            key = found.group(0)
            if key == "public":
                continue
            column = starts[2] + found.start() + 1
            if "=" in key:  # a field path and its category (a minimise route)
                column += key.index("=") + 1
                key = key.split("=", 1)[1]
            if key not in categories:
                findings.append(Finding(
                    Severity.WARNING, "route-unknown-category",
                    f"route names category {key!r}, which is not in the category tree",
                    origin, number, column,
                    "every request on this route is denied (unknown_category); fix the key",
                ))
            elif SPECIAL in categories.ancestors(key):
                findings.append(Finding(
                    Severity.WARNING, "route-special-category",
                    f"route names special category {key!r}, which is never collected",
                    origin, number, column,
                    "every request on this route is denied (special_category)",
                ))
    return findings


def _action_warnings(text: str, origin: str) -> list[Finding]:
    """Warnings for a row taking ``PUT``, ``PATCH``, ``DELETE`` or any method (``*``, which
    takes them) as a read: those a minimise row may not take (``CHANGING_METHODS``)."""
    from middleware.routes import CHANGING_METHODS

    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values = [v.strip() for v in next(csv.reader([line], skipinitialspace=True), [])]
        if (len(values) < 3 or values[0].upper() not in CHANGING_METHODS or values[2] == "public"
                or (len(values) > 3 and values[3].lower() not in ("", "read"))):
            continue
        starts = field_starts(line)
        at = starts[3] if len(values) > 3 and values[3] else starts[0]
        column = at + len(line[at:]) - len(line[at:].lstrip()) + 1
        findings.append(Finding(
            Severity.WARNING, "route-changing-read",
            f"{values[0].upper()} {values[1]} is judged as a read: a caller granted read on "
            "its categories may run it", origin, number, column,
            "write the action: write for a method that changes data (read is the default)"))
    return findings


def _taken_warnings(rules: list[RouteRule], text: str, origin: str) -> list[Finding]:
    """Warnings for a row of ``rules`` (``text``'s) whose own path the table refuses
    (``route_not_declared``): an earlier row would match it in another case, without its
    trailing slash or ``.format``, or with a slash put after it, as many upstreams route
    (:meth:`RouteTable.match`)."""
    from middleware.routes import RouteTable, sample_path

    lines = [line for line in text.split("\n") if line.strip()
             and not line.strip().startswith("#")]  # a rule's line, as parse_routes reads
    numbers = [n for n, line in enumerate(text.split("\n"), start=1) if line.strip()
               and not line.strip().startswith("#")]
    table = RouteTable(rules)
    findings: list[Finding] = []
    for at, rule in enumerate(rules):
        method, path = "GET" if rule.method == "*" else rule.method, sample_path(rule.template)
        if table.match(method, path) is not None or RouteTable([rule]).match(method, path) is None:
            continue
        earlier = next((i for i in range(at)
                        if RouteTable([rules[i], rule]).match(method, path) is None), None)
        if earlier is None:
            continue
        findings.append(Finding(
            Severity.WARNING, "route-taken-earlier",
            f"{rule.method} {path} is refused (route_not_declared): line {numbers[earlier]} "
            f"({rules[earlier].method} {rules[earlier].template}) would match it in another "
            "case, without its trailing slash or .format, or with a slash after it, as many "
            "upstreams route", origin, numbers[at], field_columns(lines[at])[1],
            f"list this row before line {numbers[earlier]}"))
    return findings
