"""``guard audit index``: follow the audit journal into the store, outside the service."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from guard._errors import ConfigError
from guard.cli._groups import audit_app


def register(app: typer.Typer) -> None:
    """The command lives on ``audit_app`` (mounted as ``guard audit``); nothing to add."""


@audit_app.command("index")
def index_cmd(  # noqa: PLR0917 - one parameter per option
    once: Annotated[bool, typer.Option(
        "--once", help="Index every lane up to its durable end, then exit")] = False,
    store: Annotated[str | None, typer.Option(
        "--store", help="sqlite:///PATH or postgresql://... (default: settings)")] = None,
    journal: Annotated[Path | None, typer.Option(
        "--journal", help="The journal folder (default: the one the settings name)")] = None,
    timeout: Annotated[float, typer.Option(
        help="With --once: seconds a lane may take before it is an error")] = 60.0,
    every: Annotated[float, typer.Option(
        help="Seconds between progress lines and looks for new lanes")] = 5.0,
    interval: Annotated[float, typer.Option(
        help="Seconds from durable to in the store the indexer aims at (a transaction "
             "starts sooner for 5,000 waiting records; longer: fewer, larger "
             "transactions, less CPU per event)")] = 0.3,
) -> None:
    """Index every lane of the journal into the store until stopped (SIGTERM, Ctrl-C).

    For ``audit.index = "external"``; one such process per journal folder (``auto``,
    the default at SQLite, runs the same follower as a child of each service).
    """
    from guard.audit import open_store
    from guard.audit._follow import Follower
    from guard.audit._jtrail import journal_folder
    from guard.config import load_settings

    settings = load_settings().audit
    if store is not None:
        settings = settings.model_copy(update={"store": store})
    folder = journal if journal is not None else journal_folder(settings)
    if interval <= 0 or every <= 0:
        raise ConfigError("--interval and --every must be more than 0 seconds")
    if settings.store.startswith("sqlite:"):
        from guard.audit._sqlite import bind_nulls_at_once

        bind_nulls_at_once()  # this process only indexes
    follower = Follower(folder, open_store(settings.store, create=True), interval=interval,
                        retry=settings.index_retry_seconds)
    stop = threading.Event()
    try:
        follower.discover()
        if once:
            follower.catch_up(timeout)
            typer.echo(f"indexed {len(follower.indexers)} lane(s) of {folder} up to their "
                       "durable end")
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"indexing {folder} into the audit store until stopped")
        said, due = "", time.monotonic()
        while not stop.wait(min(every, 1.0)):
            follower.discover()
            if time.monotonic() >= due:
                line = follower.progress()
                if line != said:
                    typer.echo(line)
                said, due = line, time.monotonic() + every
    finally:
        follower.close()
        follower.store.close()
