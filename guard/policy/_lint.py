"""Lint: every problem of a policy, with file, line, column and a hint.

Errors refuse the load: they are exactly what the compiled engine needs to
decide as casbin's Enforcer would with model.conf (known keys, one parent, no
cycle, depth within casbin's role hierarchy, the built-in categories, one
party type and one country per caller...) plus what POLICY-SPEC forbids.
Warnings load: redundant grants, grants no one can use, purposes no one is
granted, transfers without safeguard, routes naming unknown categories. Every
error that makes a routes file refuse to load is a lint error too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from casbin.model import Model

from guard._errors import PolicyError
from guard.policy._compile import parse_model
from guard.policy._compiled import CEILING_PREFIX
from guard.policy._findings import Finding, Severity
from guard.policy._lint_base import Linter, Tree
from guard.policy._lint_grants import lint_grants
from guard.policy._lint_parties import lint_parties
from guard.policy._lint_routes import ROUTES_FILE, lint_routes, missing_routes
from guard.policy._lint_survival import lint_survival, survival_rows
from guard.policy._lint_trees import (
    categories_tree,
    lint_bases,
    lint_ceilings,
    lint_groupings,
    purposes_tree,
)
from guard.policy._source import PolicySource, Row, parse_rows, read_source, refuse_hidden_break

_ENCODING = {"p": 4, "g": 2, "g2": 2, "g3": 2, "g4": 2, "g5": 2}
_TYPES_HINT = "use one of the types defined in model.conf (p, g, g2, g3, g4, g5)"


def _arity(model: Model, ptype: str) -> int | None:
    sec = ptype[:1]
    assertion = model.model.get(sec, {}).get(ptype) if sec in ("p", "g") else None
    if assertion is None:
        return None
    return len(assertion.tokens) if sec == "p" else int(assertion.value.count("_"))


def _structure(lint: Linter, rows: list[Row], model: Model) -> dict[str, list[Row]]:
    """Types, arity, empty values, duplicates; returns the sound rows by type."""
    sound: dict[str, list[Row]] = defaultdict(list)
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    arities: dict[str, int | None] = {}
    for row in rows:
        ptype = row.ptype
        if ptype not in arities:
            arities[ptype] = _arity(model, ptype)
        expected = arities[ptype]
        if expected is None:
            lint.error("unknown-policy-type", row, -1, f"unknown policy type {ptype!r}",
                       _TYPES_HINT)
            continue
        if len(row.values) != expected:
            lint.error("wrong-arity", row, -1, f"{ptype} takes {expected} values, this "
                       f"line has {len(row.values)}", "see the column list in the section "
                       "header above this line")
            continue
        if "" in row.values:
            empty = row.values.index("")
            lint.error("empty-value", row, empty, f"value {empty + 1} of this {ptype} "
                       "line is empty", "fill it in or remove the line")
            continue
        key = (ptype, row.values)
        first = seen.setdefault(key, row.line)
        if first != row.line:
            lint.error("duplicate-line", row, -1, f"duplicate of line {first}",
                       "remove one of the two lines")
            continue
        sound[ptype].append(row)
    return sound


def _encoding_known(model: Model) -> bool:
    return all(_arity(model, ptype) == n for ptype, n in _ENCODING.items())


def _lint(source: PolicySource, rows: list[Row], model: Model) -> tuple[list[Finding], Tree]:
    lint = Linter(source.rules_origin)
    sound = _structure(lint, rows, model)
    if not _encoding_known(model):
        lint.warning("model-not-recognised", None, None, "model.conf does not define the "
                     "policy types p (4 values) and g..g5 (2 values): only the structure "
                     "was checked", "use the shipped model.conf")
        return _sorted(lint.findings), Tree("category")
    tree_rows: list[Row] = []
    ceiling_rows: list[Row] = []
    for row in sound["g"]:
        (ceiling_rows if row.values[1].startswith(CEILING_PREFIX) else tree_rows).append(row)
    categories = categories_tree(lint, tree_rows)
    purposes = purposes_tree(lint, sound["g2"])
    basis_rows, survives = survival_rows(sound["g3"])
    lint_bases(lint, basis_rows, purposes)
    lint_ceilings(lint, ceiling_rows, categories, purposes)
    lint_groupings(lint, purposes)
    lint_survival(lint, survives, purposes)
    parties = lint_parties(lint, sound["g4"], sound["g5"])
    lint_grants(lint, sound["p"], categories, purposes, parties)
    return _sorted(lint.findings), categories


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.line or 0, f.column or 0))


def lint_rows(source: PolicySource, rows: list[Row], model: Model) -> list[Finding]:
    """Check the rows against the model; errors refuse the load, warnings do not."""
    return _lint(source, rows, model)[0]


def unbalanced_line(text: str) -> tuple[int, int] | None:
    """``(line, column)`` of the first bracket casbin's CSV reader cannot balance."""
    if ")" not in text and "]" not in text:
        return None
    for number, raw in enumerate(text.split("\n"), start=1):
        if (")" not in raw and "]" not in raw) or raw.lstrip().startswith("#"):
            continue
        depth = 0
        for column, char in enumerate(raw, start=1):
            if char in "([":
                depth += 1
            elif char in ")]":
                depth -= 1
                if depth < 0:
                    return number, column
    return None


def check_readable(source: PolicySource) -> None:
    """Raise a PolicyError for rules text casbin's CSV reader would crash on, or that a
    reviewer reads otherwise (a line break only some readers see)."""
    refuse_hidden_break(source.rules_text, source.rules_origin)
    bad = unbalanced_line(source.rules_text)
    if bad is not None:
        raise PolicyError("unbalanced closing bracket: casbin cannot read this line",
                          path=source.rules_origin, line=bad[0], column=bad[1],
                          hint="remove the bracket; keys contain no brackets")


def lint_source(source: PolicySource, routes: Path | None = None) -> list[Finding]:
    """Every finding of a policy held as texts (and of its routes file, if given)."""
    try:
        model = parse_model(source.model_text, source.model_origin)
    except PolicyError as exc:
        return [Finding(Severity.ERROR, "model-unreadable", exc.message, source.model_origin,
                        hint="compare it with the shipped model.conf")]
    findings: list[Finding] = []
    text = source.rules_text
    try:
        refuse_hidden_break(text, source.rules_origin)
    except PolicyError as exc:
        findings.append(Finding(Severity.ERROR, "hidden-line-break", exc.message,
                                source.rules_origin, exc.line, exc.column, exc.hint))
    while (bad := unbalanced_line(text)) is not None:
        findings.append(Finding(Severity.ERROR, "malformed-line", "unbalanced closing "
                                "bracket: casbin cannot read this line", source.rules_origin,
                                bad[0], bad[1], "remove the bracket; keys contain no brackets"))
        lines = text.split("\n")
        lines[bad[0] - 1] = ""
        text = "\n".join(lines)
    found, categories = _lint(source, parse_rows(text, source.rules_origin), model)
    findings.extend(found)
    if routes is not None and routes.is_file():
        findings.extend(lint_routes(routes, categories))
    return _sorted(findings)


def lint_policy(policy_dir: Path, routes: Path | None = None) -> list[Finding]:
    """Every finding of a policy folder: model.conf, rules.csv and its routes file.

    Args:
        policy_dir: The folder with model.conf and rules.csv.
        routes: The routes file the sidecar would read; by default routes.csv in the
            folder, linted when present. A routes file named here must exist.

    Raises:
        PolicyError: the folder or one of its files cannot be read.
    """
    source = read_source(policy_dir)
    if routes is not None and routes != policy_dir / ROUTES_FILE and not routes.is_file():
        return _sorted([*lint_source(source), missing_routes(routes)])
    return lint_source(source, routes if routes is not None else policy_dir / ROUTES_FILE)


def has_errors(findings: list[Finding]) -> bool:
    """Whether any finding refuses the load."""
    return any(f.severity is Severity.ERROR for f in findings)
