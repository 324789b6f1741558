"""Lint of ``routes.csv``: every category a route names must be in the category tree."""

from __future__ import annotations

import re
from pathlib import Path

from guard.policy._compiled import SPECIAL
from guard.policy._findings import Finding, Severity
from guard.policy._lint_base import Tree
from guard.policy._source import field_starts

ROUTES_FILE = "routes.csv"


def lint_routes(path: Path, categories: Tree) -> list[Finding]:
    """Warnings for route categories that are unknown or special; never raises on odd lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding(Severity.WARNING, "routes-unreadable", f"cannot read routes: {exc}",
                        str(path), hint="fix or remove the file")]
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        starts = field_starts(line)
        if len(starts) < 3:
            continue  # malformed; the route loader reports it
        end = starts[3] - 1 if len(starts) > 3 else len(line)
        raw = line[starts[2]:end]
        for found in re.finditer(r"[^\s;|\"]+", raw):
            key = found.group(0)
            if key == "public":
                continue
            column = starts[2] + found.start() + 1
            if key not in categories:
                findings.append(Finding(
                    Severity.WARNING, "route-unknown-category",
                    f"route names category {key!r}, which is not in the category tree",
                    str(path), number, column,
                    "every request on this route is denied (unknown_category); fix the key",
                ))
            elif SPECIAL in categories.ancestors(key):
                findings.append(Finding(
                    Severity.WARNING, "route-special-category",
                    f"route names special category {key!r}, which is never collected",
                    str(path), number, column,
                    "every request on this route is denied (special_category)",
                ))
    return findings
