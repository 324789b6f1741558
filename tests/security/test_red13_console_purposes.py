"""Thirteenth review: a token's ``purposes`` claim binds at the console too.

A token may carry a ``purposes`` claim limiting the purposes its caller may declare; the
ninth review made the sidecar's register API and ``/v1/decide`` honour it. The console
never looked at it: an auditor's token given to an order-processing tool alone
(``purposes: ["order.processing"]``) signed in, as a cookie or a bearer header, read the
whole trail and looked data subjects up, each look-up declaring ``console.purpose``
(``rights.request``), which the token leaves out. The console's work is done under
``console.purpose``: a token whose claim leaves it out is not an auditor's sign-in.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

_CONSOLE_KIT = Path(__file__).resolve().parents[1] / "console"
if str(_CONSOLE_KIT) not in sys.path:
    sys.path.insert(0, str(_CONSOLE_KIT))

from consolekit import SUBJECT, UvicornThread, console_settings, token  # noqa: E402

from guard.config import Settings  # noqa: E402
from middleware.console import create_console  # noqa: E402

SUPPORT = "svc:support"
"""An auditor, granted rights.request by the shipped policy."""


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings = console_settings(tmp_path_factory.mktemp("purposes"), auditors=[SUPPORT])
    with UvicornThread(create_console(settings)) as server:
        yield server.url, settings


@pytest.mark.parametrize("purposes", [["order.processing"], ["rights.request.other"],
                                      ["rightsrequest"]])
def test_a_token_whose_purposes_leave_out_the_consoles_is_refused(
        console: tuple[str, Settings], purposes: list[str]) -> None:
    url, settings = console
    limited = token(settings, SUPPORT, purposes)
    with httpx.Client(base_url=url, timeout=20) as client:
        signed = client.post("/signin", data={"token": limited})
        # Before: 303 and a cookie, then the subject's report.
        assert signed.status_code == 401, signed.text
        assert "guard_console" not in client.cookies
        looked = client.post("/subject", data={"subject": SUBJECT})
        assert looked.status_code == 303
        assert looked.headers["location"].endswith("/signin")
    with httpx.Client(base_url=url, timeout=20) as client:
        bearer = client.get("/decisions", headers={"authorization": f"Bearer {limited}"})
        # Before: 200, the decisions table.
        assert bearer.status_code == 303
        assert bearer.headers["location"].endswith("/signin")


@pytest.mark.parametrize("purposes", [None, ["rights.request"], ["rights"],
                                      ["order.processing", "rights.request"]])
def test_a_token_that_may_declare_the_consoles_purpose_signs_in(
        console: tuple[str, Settings], purposes: list[str] | None) -> None:
    url, settings = console
    with httpx.Client(base_url=url, timeout=20) as client:
        signed = client.post("/signin", data={"token": token(settings, SUPPORT, purposes)})
        assert signed.status_code == 303, signed.text
        assert client.get("/decisions").status_code == 200
