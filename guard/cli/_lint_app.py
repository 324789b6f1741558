"""``guard policy lint --app module:app``: the Category fields of an app's response models.

Imports the app (as uvicorn does: ``module:attribute``, the working folder on
the path), reads every ``@guarded`` declaration with its response model, and
reports a field whose category the policy does not know (a warning, as for
routes.csv: such a field is always withheld) and a declaration the middleware
would refuse at start (an error).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

from guard._errors import PolicyError
from guard.policy._findings import Finding, Severity


class AppImportError(Exception):
    """The ``--app`` value does not name an importable app."""


def load_app(spec: str) -> object:
    """The object ``module:attribute`` names; raises AppImportError with one line."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AppImportError(f"--app {spec!r}: expected MODULE:APP, e.g. service.main:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the app's own import error, in one line
        raise AppImportError(f"--app {spec!r}: cannot import {module_name}: "
                             f"{type(exc).__name__}: {exc}") from None
    app = getattr(module, attribute, None)
    if app is None:
        raise AppImportError(f"--app {spec!r}: {module_name} has no attribute {attribute!r}")
    return app


def lint_app(app: object, spec: str, known: Iterable[str]) -> list[Finding]:
    """Findings for the app's guarded routes and their response models' categories."""
    from middleware.routes import rules_from_app

    known_set = set(known)
    try:
        rules = rules_from_app(app)
    except PolicyError as exc:
        return [Finding(Severity.ERROR, "app-declaration", str(exc), spec,
                        hint="the middleware refuses to start with this declaration")]
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        if rule.fields is None:
            continue
        for path, category in rule.fields.paths().items():
            if category in known_set or (rule.template, path) in seen:
                continue
            seen.add((rule.template, path))
            findings.append(Finding(
                Severity.WARNING, "model-category-unknown",
                f"{rule.template}: field {path} has category {category!r}, "
                "which the policy does not know (always withheld)",
                spec, hint="fix the Category key or add it to rules.csv"))
    return findings
