"""Where every command finds its configuration and policy, resolved once, the same way.

The enforcement points (middleware, sidecar) load ``[policy] dir`` through
:func:`guard.policy.resolve_policy_dir`; every command does the same, so the CLI
never judges with a policy other than the one the guard would load, and it says
on stderr which folder it used (stdout stays machine-readable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from guard.config import Settings, load_settings
from guard.policy._lint_routes import ROUTES_FILE
from guard.policy._source import SHIPPED_DIR, resolve_policy_dir

_DRIVER_LOGGERS = ("psycopg", "psycopg.pool")


def settings() -> Settings:
    """The settings every command runs with; a bad file, key or value is a ConfigError."""
    return load_settings()


def policy_folder(option: Path | None) -> Path:
    """The policy folder: ``--policy-dir``, else ``[policy] dir``, else ./policies, else shipped.

    Args:
        option: The ``--policy-dir`` given on the command line, if any.

    Raises:
        PolicyError: the folder named does not exist.
    """
    return resolve_policy_dir(option if option is not None else settings().policy.dir)


def say_policy(folder: Path, option: Path | None) -> None:
    """Say on stderr which policy folder a command used (after its output, so an error
    stays one line); note when the enforcement points load pushed policies instead."""
    typer.echo(f"guard: policy {describe(folder)}", err=True)
    if option is None and settings().policy.source != "files":
        typer.echo("guard: note: policy.source is not 'files': the enforcement points "
                   "load the newest pushed policy, not this folder", err=True)


def describe(folder: Path) -> str:
    """``policies`` or ``the copy shipped with purpose-guard (PATH)``."""
    if folder.resolve() == SHIPPED_DIR.resolve():
        return (f"{folder} (the copy shipped with purpose-guard: no --policy-dir, "
                "no [policy] dir and no ./policies)")
    return str(folder)


def routes_file(folder: Path) -> Path:
    """routes.csv as the sidecar reads it: ``[sidecar] routes``, else beside the policy."""
    configured = settings().sidecar.routes
    return configured if configured is not None else folder / ROUTES_FILE


def quiet_driver_logs() -> None:
    """Keep database drivers' own log lines (pool retries, notices) off a command's stderr.

    The command reports a failure itself, in one line.
    """
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
