"""Command groups shared by several modules (``guard policy ...``, ``guard audit ...``)."""

from __future__ import annotations

import typer

policy_app = typer.Typer(
    help="Lint, test, diff, document and publish the policy.", no_args_is_help=True
)
audit_app = typer.Typer(help="Query, report on and verify the audit trail.", no_args_is_help=True)
