"""The ``guard`` command: one typer app, one module per command group."""

from __future__ import annotations

import sys

import typer

from guard._errors import GuardError
from guard.cli import _audit, _check, _console, _policy, _sidecar, _subject, _token
from guard.cli._groups import audit_app, policy_app

app = typer.Typer(
    name="guard",
    help="purpose-guard: decide, audit and manage purpose-based access to personal data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _module in (_check, _audit, _policy, _token, _sidecar, _subject, _console):
    _module.register(app)
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")


def main() -> None:
    """Entry point: every GuardError or usage mistake becomes one readable line and exit 2."""
    try:
        code = app(standalone_mode=False)  # not standalone: click returns Exit codes
    except GuardError as exc:
        _fail(str(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("guard: aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's click: unknown option, missing argument...
        _fail(exc.format_message())
    else:
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    typer.echo(f"guard: error: {message}", err=True)
    sys.exit(2)
