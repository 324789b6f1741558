"""Ninth review: the console's sign-in cookies are Secure behind a proxy that ends TLS.

The console set ``Secure`` only when the request it saw came over HTTPS. Behind nginx
ending TLS (``guard console`` runs uvicorn without proxy headers, and the sidecar that
mounts the console never believes them) every request is plain HTTP to it, so the
cookie holding the auditor's token (or the OIDC session) went out without ``Secure``:
a browser sends it again over plain HTTP to the same host, to anyone on the path.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from opskit import self_signed_certificate
from sidecarkit import Nginx, ServerThread, free_port, need_nginx, policy_copy, sidecar_settings

from guard.config import ConsoleSettings
from middleware.console import create_console
from middleware.sidecar import create_app
from middleware.sidecar._server import SidecarHttpProtocol

POLICIES = Path(__file__).resolve().parents[2] / "policies"
AUDITOR = "svc:support"


@pytest.fixture(scope="module", params=["guard console", "sidecar"])
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          keys: Any) -> Iterator[tuple[str, Path, str]]:
    """nginx ending TLS in front of the console (on its own, or mounted in the sidecar),
    with the console's default settings: (https URL of the sign-in, CA file, plain URL)."""
    need_nginx()
    tmp = tmp_path_factory.mktemp("cookie")
    mounted = request.param == "sidecar"
    settings = sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES), keys.identity())
    settings = settings.model_copy(update={"console": ConsoleSettings(
        auditors=[AUDITOR], mount_in_sidecar=mounted)})
    app = create_app(settings) if mounted else create_console(settings)
    cert, key = self_signed_certificate(tmp)
    port = free_port()
    # As `guard sidecar` and `guard console` serve it: neither believes forwarded headers.
    served = ServerThread(app, free_port(), http=SidecarHttpProtocol if mounted else "h11")
    served.server.config.proxy_headers = False
    with served as server:
        nginx = Nginx(tmp / "nginx", (
            "server {\n"
            f"    listen 127.0.0.1:{port} ssl;\n"
            f"    ssl_certificate {cert};\n"
            f"    ssl_certificate_key {key};\n"
            "    location / {\n"
            f"        proxy_pass {server.url};\n"
            "        proxy_set_header Host $host;\n"
            "        proxy_set_header X-Forwarded-Proto $scheme;\n"
            "    }\n"
            "}\n")).start(port)
        try:
            prefix = "/console" if mounted else ""
            yield f"https://127.0.0.1:{port}{prefix}", cert, server.url + prefix
        finally:
            nginx.stop()


def _cookie_lines(answer: httpx.Response) -> list[str]:
    return [value for name, value in answer.headers.multi_items() if name == "set-cookie"]


def test_the_sign_in_cookie_is_secure_behind_a_proxy_that_ends_tls(
    front: tuple[str, Path, str], keys: Any,
) -> None:
    url, ca, _ = front
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
        answer = client.post(url + "/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert answer.status_code == 303, answer.text
        lines = _cookie_lines(answer)
        assert lines, "no cookie set"
        for line in lines:
            attributes = [part.strip().lower() for part in line.split(";")]
            assert "secure" in attributes, line
            assert "httponly" in attributes, line
        # The browser keeps it for HTTPS, and it signs in there.
        assert answer.headers["location"].endswith("/signin/done")
        done = client.get(url + "/signin/done")
        assert done.status_code == 303
        assert done.headers["location"].endswith("/decisions")
        assert client.get(url + "/decisions").status_code == 200


def test_a_plain_http_test_client_may_turn_it_off(
    tmp_path: Path, keys: Any,
) -> None:
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                keys.identity())
    settings = settings.model_copy(update={"console": ConsoleSettings(
        auditors=[AUDITOR], secure_cookies=False)})
    with ServerThread(create_console(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.post("/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert answer.status_code == 303
        assert all("secure" not in [p.strip().lower() for p in line.split(";")]
                   for line in _cookie_lines(answer))
        assert client.get("/decisions").status_code == 200


def test_a_browser_that_drops_the_secure_cookie_is_told_why(
    tmp_path: Path, keys: Any,
) -> None:
    # Over plain HTTP to an address that is not localhost, a browser drops a Secure cookie
    # (httpx does so on any address): the sign-in must say why, not loop back to its form.
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                keys.identity())
    settings = settings.model_copy(update={"console": ConsoleSettings(auditors=[AUDITOR])})
    with ServerThread(create_console(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=10, follow_redirects=True) as client:
        answer = client.post("/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert answer.status_code == 400, answer.url
        assert answer.url.path == "/signin/done"
        assert "did not keep the sign-in cookie" in answer.text
        assert "console.secure_cookies" in answer.text


def test_the_oidc_redirect_comes_back_to_the_public_https_address(tmp_path: Path) -> None:
    """Behind a proxy that ends TLS the console's own URL is plain HTTP: the provider sent
    the browser (and the code) back to ``http://``, where the Secure flow cookie is not
    sent. ``console.public_url`` names the address browsers use. The flow cookie's
    deletion and the session cookie that end the sign-in are Secure too."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))  # consolekit
    from tests.console.consolekit import UvicornThread, console_settings
    from tests.console.test_console_oidc import AUDITOR_EMAIL, CLIENT, Provider

    provider = Provider()
    with UvicornThread(provider.app()) as idp:
        provider.url = idp.url
        settings = console_settings(tmp_path, oidc_issuer=idp.url, oidc_client_id=CLIENT,
                                    oidc_auditor_claim="email", auditors=[AUDITOR_EMAIL],
                                    secure_cookies=True,
                                    public_url="https://audit.example/console/")
        with UvicornThread(create_console(settings)) as served, \
                httpx.Client(base_url=served.url, timeout=10) as client:
            answer = client.get("/oidc/login")
            assert answer.status_code == 303
            query = parse_qs(urlsplit(answer.headers["location"]).query)
            assert query["redirect_uri"] == ["https://audit.example/console/oidc/callback"]
            flow = [line for line in _cookie_lines(answer) if _secure(line)]
            assert flow, _cookie_lines(answer)
            # The provider sends the browser back over HTTPS (the proxy's), with the cookie.
            back = urlsplit(httpx.get(answer.headers["location"]).headers["location"])
            done = client.get(f"/oidc/callback?{back.query}",
                              headers={"cookie": flow[0].split(";")[0]})
    assert done.status_code == 303, done.text
    lines = _cookie_lines(done)
    assert len(lines) == 2, lines  # the flow's cookie deleted, the session's set
    assert all(_secure(line) for line in lines), lines


def _secure(line: str) -> bool:
    attributes = [part.strip().lower() for part in line.split(";")]
    return "secure" in attributes and "httponly" in attributes


def test_the_sign_out_cookies_are_secure_behind_a_proxy_that_ends_tls(
    front: tuple[str, Path, str],
) -> None:
    """The sign-out deleted the cookies without ``Secure``: a cookie named like the
    auditor's token went out as one a plain-HTTP page may read and set."""
    url, ca, _ = front
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
        answer = client.post(url + "/signout")
    assert answer.status_code == 303, answer.text
    lines = _cookie_lines(answer)
    assert len(lines) == 2, lines  # the token's cookie and the OIDC session's
    assert all(_secure(line) and "max-age=0" in line.lower() for line in lines), lines


def test_a_public_url_that_is_no_base_url_is_refused() -> None:
    for bad in ("audit.example", "ftp://audit.example", "https://audit.example/?x=1"):
        with pytest.raises(ValueError, match="base URL"):
            ConsoleSettings(public_url=bad)
