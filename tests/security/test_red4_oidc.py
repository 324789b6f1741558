"""Fourth review: an OIDC sign-in by e-mail address needs an address the provider verified.

``console.oidc_auditor_claim = "email"`` compares the ID token's ``email`` with
``console.auditors``. Many providers let a user put any address on an account
(unverified, or a tenant's own), and say so only in ``email_verified``: an
attacker who registers an auditor's address must not become that auditor.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from middleware.console import create_console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))  # consolekit
from tests.console.consolekit import UvicornThread, console_settings
from tests.console.test_console_oidc import AUDITOR_EMAIL, CLIENT, Provider


@dataclass
class Unverified(Provider):
    """A provider that names the auditor's address and says whether it verified it."""

    verified: object = False


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Unverified, str]]:
    provider = Unverified()
    with UvicornThread(provider.app()) as idp:
        provider.url = idp.url
        settings = console_settings(tmp_path_factory.mktemp("oidc"), oidc_issuer=idp.url,
                                    oidc_client_id=CLIENT, oidc_auditor_claim="email",
                                    auditors=[AUDITOR_EMAIL])
        with UvicornThread(create_console(settings)) as served:
            yield provider, served.url


@pytest.mark.parametrize("verified", [False, None, "true", 1], ids=repr)
def test_an_unverified_address_never_signs_in_as_the_auditor(
        console: tuple[Unverified, str], verified: object) -> None:
    provider, url = console
    provider.verified = verified
    with httpx.Client(follow_redirects=True) as client:
        answer = client.get(f"{url}/oidc/login")
        assert answer.status_code == 403, answer.text
        assert client.get(f"{url}/decisions").url.path == "/signin"


def test_a_verified_address_signs_in(console: tuple[Unverified, str]) -> None:
    provider, url = console
    provider.verified = True
    with httpx.Client(follow_redirects=True) as client:
        answer = client.get(f"{url}/oidc/login")
    assert answer.status_code == 200
    assert answer.url.path == "/decisions"
