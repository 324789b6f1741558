"""``guard policy lint | test | diff | ropa``: policy as code for the platform team."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from guard.cli._groups import policy_app
from guard.cli._where import policy_folder, routes_file, say_policy
from guard.policy._compiled import CompiledPolicy
from guard.policy._diff import (
    diff_policies,
    read_revision,
    read_revision_files,
    render_markdown,
    render_text,
    to_json,
)
from guard.policy._findings import Finding, Severity
from guard.policy._lint import has_errors, lint_policy
from guard.policy._lint_routes import ROUTES_FILE
from guard.policy._load import SlowPathWarning, compile_source
from guard.policy._ropa import build_ropa
from guard.policy._ropa import render_csv as ropa_csv
from guard.policy._ropa import render_markdown as ropa_markdown
from guard.policy._source import PolicySource, read_source
from guard.policy._tests import CASES_FILE, read_cases, run_cases, summary

PolicyDirOpt = Annotated[
    Path | None,
    typer.Option("--policy-dir", help="Folder with model.conf and rules.csv "
                 "[default: [policy] dir, else ./policies, else the shipped policy]."),
]


def _usage(message: str) -> NoReturn:
    typer.echo(f"guard: error: {message}", err=True)
    raise SystemExit(2)


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        _usage(f"{option} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _compile(source: PolicySource) -> CompiledPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPathWarning)
        return compile_source(source)


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _github(finding: Finding) -> str:
    props = [f"file={_gh_escape(finding.path, prop=True)}"]
    if finding.line is not None:
        props.append(f"line={finding.line}")
    if finding.column is not None:
        props.append(f"col={finding.column}")
    props.append(f"title={_gh_escape(finding.code, prop=True)}")
    message = finding.message + (f" (hint: {finding.hint})" if finding.hint else "")
    return f"::{finding.severity.value} {','.join(props)}::{_gh_escape(message)}"


@policy_app.command("lint")
def lint(
    policy_dir: PolicyDirOpt = None,
    output: Annotated[str, typer.Option("--format", metavar="text|json|github",
                                        help="Output format.")] = "text",
    app_spec: Annotated[str | None, typer.Option(
        "--app", metavar="MODULE:APP",
        help="Also check the Category fields of this app's guarded response models.",
    )] = None,
) -> None:
    """Report every error and warning of the policy with file:line:col; exit 1 on an error."""
    _choice(output, ("text", "json", "github"), "--format")
    folder = policy_folder(policy_dir)
    findings = lint_policy(folder, routes_file(folder))
    if app_spec is not None:
        findings = [*findings, *_app_findings(folder, app_spec)]
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warned = len(findings) - errors
    if output == "json":
        typer.echo(json.dumps({
            "errors": errors, "warnings": warned,
            "findings": [{"severity": f.severity.value, "code": f.code, "message": f.message,
                          "path": f.path, "line": f.line, "column": f.column, "hint": f.hint}
                         for f in findings],
        }, indent=2))
    elif output == "github":
        for finding in findings:
            typer.echo(_github(finding))
    else:
        for finding in findings:
            typer.echo(str(finding))
        typer.echo(f"{errors} error(s), {warned} warning(s)")
    say_policy(folder, policy_dir)
    raise SystemExit(1 if has_errors(findings) else 0)


def _app_findings(folder: Path, spec: str) -> list[Finding]:
    """``--app``: the app's Category fields against the policy's categories."""
    from guard.cli._lint_app import AppImportError, lint_app, load_app

    try:
        app = load_app(spec)
    except AppImportError as exc:
        _usage(str(exc))
    try:
        known = _compile(read_source(folder)).categories
    except Exception:  # the policy's own errors are reported by the lint above
        return []
    return lint_app(app, spec, known)


@policy_app.command("test")
def run_tests(
    policy_dir: PolicyDirOpt = None,
    cases: Annotated[Path | None, typer.Option(
        "--cases", metavar="FILE", help=f"Test cases [default: {CASES_FILE} in the policy folder].",
    )] = None,
) -> None:
    """Decide every test case and compare with the expected decision and reason."""
    folder = policy_folder(policy_dir)
    policy = _compile(read_source(folder))
    results = run_cases(policy, read_cases(cases if cases is not None else folder / CASES_FILE))
    for result in results:
        if not result.passed:
            typer.echo(result.describe())
    typer.echo(summary(results))
    say_policy(folder, policy_dir)
    raise SystemExit(0 if all(r.passed for r in results) else 1)


def _side(spec: str, path: str, routes: Path | None = None) -> tuple[CompiledPolicy, list[Any]]:
    """The policy and the route rows of a folder (routes.csv in it, else ``routes``) or of a
    revision (``path/routes.csv``); no routes file: no rows."""
    from middleware.routes import parse_routes

    folder = Path(spec)
    if folder.is_dir():
        policy = _compile(read_source(folder))
        where = routes if routes is not None else folder / ROUTES_FILE
        text = where.read_text(encoding="utf-8") if where.is_file() else None
        origin = str(where)
    else:
        policy = _compile(read_revision(spec, path))
        text = read_revision_files(spec, path, (ROUTES_FILE,))[0]
        origin = f"{spec}:{path.strip('/')}/{ROUTES_FILE}"
    return policy, [] if text is None else parse_routes(text, origin)


@policy_app.command("diff")
def diff(
    old: Annotated[str, typer.Argument(metavar="OLD", help="Policy folder or git revision.")],
    new: Annotated[str | None, typer.Argument(
        metavar="[NEW]", help="Policy folder or git revision [default: the policy folder as it "
        "is now, uncommitted edits included].", show_default=False)] = None,
    output: Annotated[str, typer.Option("--format", metavar="text|markdown|json",
                                        help="Output format.")] = "text",
    path: Annotated[str, typer.Option(
        "--path", help="Policy folder inside the repository, for revisions.")] = "policies",
    exit_code: Annotated[bool, typer.Option(
        "--exit-code", help="Exit 1 when the policies differ.")] = False,
) -> None:
    """The access delta from OLD to NEW: who gains or loses what, and the facts behind it.

    Without NEW, OLD is compared with the policy folder as it is now (uncommitted edits
    included): ``guard policy diff main``.
    """
    _choice(output, ("text", "markdown", "json"), "--format")
    working = policy_folder(None) if new is None else None
    new_name = str(working) if working is not None else str(new)
    old_policy, old_routes = _side(old, path)
    new_policy, new_routes = _side(new_name, path,
                                   routes_file(working) if working is not None else None)
    delta = diff_policies(old_policy, new_policy, (old_routes, new_routes))
    if output == "json":
        typer.echo(json.dumps(to_json(delta, old, new_name), indent=2))
    elif output == "markdown":
        typer.echo(render_markdown(delta, old, new_name))
    else:
        typer.echo(render_text(delta, old, new_name))
    if working is not None:
        say_policy(working, None)
    raise SystemExit(1 if exit_code and not delta.empty else 0)


@policy_app.command("ropa")
def ropa(
    policy_dir: PolicyDirOpt = None,
    output: Annotated[str, typer.Option("--format", metavar="markdown|csv",
                                        help="Output format.")] = "markdown",
) -> None:
    """The record of processing activities (GDPR Art. 30) generated from the policy."""
    _choice(output, ("markdown", "csv"), "--format")
    folder = policy_folder(policy_dir)
    policy = _compile(read_source(folder))
    activities = build_ropa(policy)
    if output == "csv":
        typer.echo(ropa_csv(activities), nl=False)
    else:
        typer.echo(ropa_markdown(activities, policy.version), nl=False)
    say_policy(folder, policy_dir)


def register(app: typer.Typer) -> None:
    """The commands live on ``policy_app`` (mounted as ``guard policy``); nothing to add here."""
    del app

