"""``guard sidecar`` (serve the enforcement point) and ``guard policy push`` (share a policy)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from guard._errors import ConfigError
from guard.cli._groups import policy_app


def _sidecar(
    *,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="Proxy mode: URL of the guarded service (else check/decide only)."),
    ] = None,
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="Folder with model.conf and rules.csv.")
    ] = None,
    policy_source: Annotated[
        str | None,
        typer.Option("--policy-source", help="'files' or a postgresql:// URL to load pushes from."),
    ] = None,
    routes: Annotated[
        Path | None, typer.Option(help="routes.csv (default: beside the policy).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn worker processes.")] = None,
    gc_freeze: Annotated[
        bool | None,
        typer.Option("--gc-freeze/--no-gc-freeze",
                     help="Freeze the start-up heap out of the collector's walks (default on)."),
    ] = None,
) -> None:
    """Serve the sidecar: reverse proxy, check endpoint, decision API, health, hot reload.

    Settings come from guard.toml and GUARD_* variables; options override them.
    """
    import uvicorn

    from guard.cli._where import describe
    from guard.config import PolicySettings, SidecarSettings, load_settings
    from middleware.sidecar import create_app
    from middleware.sidecar._app import SETTINGS_ENV, configure_logging
    from middleware.sidecar._server import HTTP_PROTOCOL

    settings = load_settings()
    sidecar_overrides = {
        "host": host,
        "port": port,
        "upstream": upstream,
        "routes": routes,
        "workers": workers,
        "gc_freeze": gc_freeze,
    }
    conf = _override(SidecarSettings, "sidecar", settings.sidecar, sidecar_overrides)
    policy = _override(
        PolicySettings, "policy", settings.policy, {"dir": policy_dir, "source": policy_source}
    )
    settings = settings.model_copy(update={"sidecar": conf, "policy": policy})
    configure_logging(conf.log_level)
    _can_listen(conf.host, conf.port)
    app = create_app(settings, own_process=True)  # fails here, in one line, on a bad setting
    typer.echo(
        f"guard sidecar on http://{conf.host}:{conf.port} "
        f"({'proxy to ' + conf.upstream if conf.upstream else 'check and decide'}; "
        f"policy {app.sidecar.holder.current.version} from "
        f"{describe(app.sidecar.policy_dir) if app.sidecar.policy_dir else 'PostgreSQL'})",
        err=True,
    )
    common = {
        "host": conf.host,
        "port": conf.port,
        "log_level": conf.log_level,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "http": HTTP_PROTOCOL,  # a client that leaves is told to every request it made
    }
    if conf.workers == 1:
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    app.sidecar.guard.close()  # each worker builds its own; this one only validated the settings
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "middleware.sidecar:app_from_env",
        factory=True,
        workers=conf.workers,
        **common,  # type: ignore[arg-type]
    )


def _can_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on (in use, unknown host)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


M = TypeVar("M", bound=BaseModel)


def _override(model: type[M], section: str, current: M, options: dict[str, Any]) -> M:
    """``current`` with the options given on the command line, validated."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return model.model_validate({**current.model_dump(), **given})
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {section}.{_first_error(exc)}") from None


def _first_error(exc: Any) -> str:
    """``sidecar.port: Input should be a valid integer`` from a pydantic ValidationError."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _push(
    *,
    store: Annotated[
        str, typer.Option("--store", help="PostgreSQL URL of the shared policy store.")
    ],
    policy_dir: Annotated[
        Path | None, typer.Option("--policy-dir", help="Folder with model.conf and rules.csv.")
    ] = None,
) -> None:
    """Lint the policy and store it in PostgreSQL; listening sidecars switch to it."""
    from guard.policy._pgsource import is_postgres_url, push_policy_dir

    if not is_postgres_url(store):
        raise ConfigError(f"--store must be a postgresql:// URL, not {store!r}")
    from guard.cli._where import policy_folder

    stored = push_policy_dir(store, policy_folder(policy_dir))
    typer.echo(f"pushed {stored.version} (#{stored.id}) from {stored.origin}")


def register(app: typer.Typer) -> None:
    """Add ``guard sidecar`` to the app and ``push`` to ``guard policy``."""
    app.command("sidecar")(_sidecar)
    policy_app.command("push")(_push)
