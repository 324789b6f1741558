"""Helpers of the console tests: settings, tokens, a filled store, a uvicorn thread."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.cli._token import issue_token
from guard.config import AuditSettings, ConsoleSettings, IdentitySettings, PolicySettings, Settings
from tests.middleware.tokenkit import UvicornThread as _UvicornThread

REPO = Path(__file__).resolve().parents[2]
AUDITOR = "svc:support"
"""The shipped policy grants svc:support rights.request: the console's auditor here."""
SUBJECT = "c-0042"
"""The raw subject id the tests look up; it must never reach a URL, a log or a row."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def console_settings(base: Path, **console: Any) -> Settings:
    """Settings for one console and the example service beside it, all under ``base``."""
    console.setdefault("auditors", [AUDITOR])
    console.setdefault("secure_cookies", False)  # httpx sends a Secure cookie over HTTPS only
    return Settings(
        policy=PolicySettings(dir=REPO / "policies", watch=False),
        audit=AuditSettings(store=f"sqlite:///{base / 'audit.db'}",
                            hmac_key=base / "subject-hmac.key",
                            signing_key=base / "audit-signing.key",
                            checkpoint_every=10),
        identity=IdentitySettings(dev_key=base / "dev-token.key"),
        console=ConsoleSettings(**console),
    )


def token(settings: Settings, caller: str, purposes: list[str] | None = None) -> str:
    """A development token for ``caller`` signed with the settings' dev key."""
    return issue_token(settings.identity, caller, purposes, 3600)


TRAFFIC: tuple[tuple[str, str, str], ...] = (
    ("svc:crm", "relationship.management", "/customers/{id}"),
    ("svc:crm", "relationship.management", "/customers/{id}/contact"),
    ("svc:marketing", "marketing", "/customers/{id}/payment"),
    ("svc:billing", "order.processing", "/customers/{id}/payment"),
    ("grp:exalens-nl", "business.administration", "/customers/{id}"),
    ("grp:exalens-in", "business.administration", "/customers/{id}"),
    ("grp:exalens-us", "business.administration", "/customers/{id}"),
    ("svc:analytics", "analytics.improvement", "/customers/{id}/profile"),
)


def send(client: httpx.Client, settings: Settings, caller: str, purpose: str, path: str,
         subject: str = SUBJECT) -> int:
    """One request to the example service; returns its status."""
    response = client.get(path.replace("{id}", subject), headers={
        "authorization": f"Bearer {token(settings, caller)}", "x-purpose": purpose})
    return response.status_code


@contextmanager
def example_service(settings: Settings) -> Iterator[httpx.Client]:
    """The example customer service (examples/customers.py) on real uvicorn, and a client."""
    from examples.customers import create_app

    with UvicornThread(create_app(settings)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def fill(client: httpx.Client, settings: Settings) -> None:
    """Allowed and denied decisions about several subjects, at home and abroad, and an
    objection in the subject register."""
    from guard import Guard
    from guard.rights import Change, EntryKind

    for subject in (SUBJECT, "c-0007", "c-0100"):
        for caller, purpose, path in TRAFFIC:
            send(client, settings, caller, purpose, path, subject)
    with Guard.from_settings(settings) as guard:
        guard.record_subject_change(Change(SUBJECT, EntryKind.OBJECTION, "marketing",
                                           ref="ticket-17", who="test:dpo"))


class UvicornThread(_UvicornThread):
    """A real uvicorn server on loopback, in a thread (info logs, a short graceful shutdown)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, log_level="info", timeout_graceful_shutdown=2)


def need_chromium() -> None:
    """Skip (or fail, when GUARD_REQUIRE_CHROMIUM=1) without Chromium and Playwright."""
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or " \
                  "scripts/install-services)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (scripts/setup)"
    if missing is None:
        return
    if os.environ.get("GUARD_REQUIRE_CHROMIUM") == "1":
        pytest.fail(missing)
    pytest.skip(missing)


class Collect(logging.Handler):
    """Keeps every log line formatted, to search them afterwards."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class World:
    """A filled store, the example service still running, and a console over the store."""

    base: Path
    settings: Settings
    example: httpx.Client
    url: str
    logs: Collect
    urls: list[str] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.base / "audit.db"
