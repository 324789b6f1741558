"""``guard console``: serve the auditor's web console over the configured audit store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from guard._errors import ConfigError


def _console(
    *,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="sqlite:///PATH or postgresql://... to read.")
    ] = None,
    auditor: Annotated[
        list[str] | None,
        typer.Option("--auditor", help="Caller id that may sign in (repeatable; adds to "
                     "console.auditors)."),
    ] = None,
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="Folder with model.conf and rules.csv.")
    ] = None,
) -> None:
    """Serve the read-only audit console (decisions, subject access, overview, integrity).

    Settings come from guard.toml and GUARD_* variables ([console], [audit],
    [identity]); options override them.
    """
    import uvicorn
    from pydantic import ValidationError

    from guard._pgurl import shown_url
    from guard.cli._where import policy_folder
    from guard.config import load_settings
    from guard.policy import load_policy
    from middleware.console import create_console
    from middleware.sidecar._app import configure_logging

    settings = load_settings()
    given = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    auditors = [*settings.console.auditors, *(auditor or [])]
    try:
        conf = settings.console.model_validate(
            {**settings.console.model_dump(), **given, "auditors": auditors})
        audit = settings.audit.model_validate(
            {**settings.audit.model_dump(), **({"store": store} if store else {})})
        policy = settings.policy.model_validate(
            {**settings.policy.model_dump(), **({"dir": policy_dir} if policy_dir else {})})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid settings: console.{where}: {first['msg']}") from None
    if not conf.auditors:
        raise ConfigError("no auditor may sign in: set console.auditors or pass --auditor")
    settings = settings.model_copy(update={"console": conf, "audit": audit, "policy": policy})
    load_policy(policy_folder(policy_dir))  # a missing or broken policy: one line, not at startup
    app = create_console(settings)  # fails here, in one line, on a bad setting
    configure_logging(settings.sidecar.log_level)
    shown = shown_url(audit.store) if audit.store.startswith("postgres") else audit.store
    typer.echo(f"guard console on http://{conf.host}:{conf.port} "  # no password in a log
               f"(store {shown}; auditors {', '.join(conf.auditors)})", err=True)
    # h11: a request's head is bounded (16 KiB); httptools keeps an endless header line
    # whole, and the sign-in is open to anyone (guard sidecar bounds it in its own server)
    uvicorn.run(app, host=conf.host, port=conf.port, log_level=settings.sidecar.log_level,
                access_log=False, proxy_headers=False, server_header=False, http="h11")


def register(app: typer.Typer) -> None:
    """Add ``guard console`` to the ``guard`` app."""
    app.command("console")(_console)
