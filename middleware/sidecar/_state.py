"""What a running sidecar holds: settings, guard, identity, routes, reloader, proxy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.types import Scope

from guard._errors import ConfigError
from guard.audit import EventKind
from guard.config import Settings
from guard.policy import CompiledPolicy, load_policy, resolve_policy_dir
from guard.policy._holder import PolicyHolder
from guard.policy._pgsource import (
    StartPolicy,
    is_postgres_url,
    load_newest_good,
    load_store_policy,
)
from middleware.identity import Authenticator
from middleware.routes import RouteTable
from middleware.sidecar._reload import Reloader

if TYPE_CHECKING:
    from guard._guard import Guard
    from middleware.sidecar._health import Readiness
    from middleware.sidecar._outcomes import PendingOutcomes
    from middleware.sidecar._proxy import Proxy


@dataclass(slots=True)
class Sidecar:
    """The parts every endpoint of one sidecar shares.

    Args:
        settings: The settings it was built from.
        guard: Policy holder and audit trail: decides and records.
        holder: The policy holder the guard decides with (reloads swap it).
        auth: Who is calling.
        routes: routes.csv: path -> categories.
        reloader: Hot reload, with the last attempt's outcome.
        policy_dir: The folder watched for changes (None with a PostgreSQL source).
        proxy: The upstream forwarder, in proxy mode, once the app has started.
        outcomes: Outcome events of proxied requests not yet handed to the trail.
        readiness: The audit trail's readiness, probed off the event loop (made by ``/readyz``).
    """

    settings: Settings
    guard: Guard
    holder: PolicyHolder
    auth: Authenticator
    routes: RouteTable
    reloader: Reloader
    policy_dir: Path | None
    proxy: Proxy | None = None
    outcomes: PendingOutcomes | None = None
    readiness: Readiness | None = None


def peer_of(scope: Scope) -> str | None:
    """The client's IP address as the server saw it."""
    client = scope.get("client")
    return str(client[0]) if client else None


def policy_loader(settings: Settings) -> tuple[Callable[[], CompiledPolicy], Path | None]:
    """The loader for the configured policy source and the folder to watch, if any."""
    source = settings.policy.source
    if is_postgres_url(source):
        return (lambda: load_store_policy(source)), None
    if source != "files":
        raise ConfigError(f"policy.source must be 'files' or a postgresql:// URL, not {source!r}")
    folder = resolve_policy_dir(settings.policy.dir)
    return (lambda: load_policy(folder)), folder


def routes_path(settings: Settings) -> Path:
    """routes.csv: ``sidecar.routes``, else beside the policy files."""
    if settings.sidecar.routes is not None:
        path = settings.sidecar.routes
    else:
        path = resolve_policy_dir(settings.policy.dir) / "routes.csv"
    if not path.is_file():
        raise ConfigError(
            f"routes file not found: {path} (set sidecar.routes or GUARD_SIDECAR__ROUTES)"
        )
    return path


def build_sidecar(settings: Settings) -> Sidecar:
    """Load everything a sidecar needs; any bad setting or policy raises a GuardError now."""
    from guard._guard import Guard

    loader, folder = policy_loader(settings)
    auth = Authenticator.from_settings(settings.identity, announce=False)  # at start-up
    routes = RouteTable.from_csv(routes_path(settings))
    start: StartPolicy | None = None
    if folder is None:  # a PostgreSQL store: start on its newest policy that loads
        start = load_newest_good(settings.policy.source)
    holder = PolicyHolder(loader, initial=start.policy if start is not None else None)
    # The guard records the policy in force and every reload's outcome.
    guard = Guard.from_settings(settings, holder=holder)
    reloader = Reloader(guard.holder)
    if start is not None:
        reloader.started_on(start)
        for skipped in start.skipped:
            guard.record_policy_event(
                EventKind.POLICY_REJECTED, start.policy.version,
                f"stored policy #{skipped.id} ({skipped.version}) skipped at start: "
                f"{skipped.error}; started on #{start.id}")
    return Sidecar(settings, guard, guard.holder, auth, routes, reloader, folder)
