"""The ``guard`` command: one typer app, one module per command group."""

from __future__ import annotations

import sys

import typer

from guard._errors import GuardError
from guard.cli import _audit, _check, _console, _index, _policy, _sidecar, _subject, _token, _where
from guard.cli._groups import audit_app, policy_app

app = typer.Typer(
    name="guard",
    help="purpose-guard: decide, audit and manage purpose-based access to personal data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for _module in (_check, _audit, _index, _policy, _token, _sidecar, _subject, _console):
    _module.register(app)
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")


@app.callback()
def _start(ctx: typer.Context) -> None:
    """Refuse bad configuration before any command runs (help still works)."""
    if "--help" in sys.argv[1:]:
        return
    _where.settings()
    if ctx.invoked_subcommand not in ("sidecar", "console"):  # services log them
        _where.quiet_driver_logs()


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
    except BrokenPipeError:  # e.g. `guard ... | head`: the reader left early
        _closed_pipe()
    except SystemExit:
        # typer met EPIPE: it wraps stdout in (its copy of) click's PacifyFlushWrapper, exit 1
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _closed_pipe()
        raise
    else:
        sys.exit(code if isinstance(code, int) else 0)


def _closed_pipe() -> None:
    """Stop quietly writing to a closed pipe (no second error at exit), say so, exit 2."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    _fail("output closed before everything was written (broken pipe)")


def _fail(message: str) -> None:
    typer.echo(f"guard: error: {message}", err=True)
    sys.exit(2)
