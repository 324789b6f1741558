"""Caller spoofing through ``X-Forwarded-For``: an address never proves who is calling.

uvicorn rewrites ``scope["client"]`` from ``X-Forwarded-For`` for connections
from ``forwarded_allow_ips`` (loopback by default, anywhere with ``*``). A
client that sets that header and ``X-Caller`` must not become the caller it
names; only a proxy that proves itself with the configured secret may assert a
caller.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from bench._pg import free_port
from examples.customers import create_app
from guard._guard import Guard

REPO = Path(__file__).resolve().parents[2]
PAYMENT = "/customers/c-0001/payment"
SPOOF = {"x-forwarded-for": "10.9.9.9", "x-caller": "svc:billing",
         "x-purpose": "order.processing"}


def uvicorn_server(app: Any, forwarded_allow_ips: str | None) -> UvicornThread:
    """The example service under a real uvicorn on loopback, proxy headers as configured.

    ``proxy_headers`` is uvicorn's default (True): the peer is rewritten from the header.
    """
    options = {} if forwarded_allow_ips is None else {"forwarded_allow_ips": forwarded_allow_ips}
    return UvicornThread(app, **options)


@pytest.fixture(params=[None, "*"], ids=["default-forwarded-ips", "forwarded-ips-star"])
def served(request: pytest.FixtureRequest, keys: Keys,
           tmp_path: Path) -> Iterator[tuple[UvicornThread, Path]]:
    settings = guard_settings(tmp_path, keys, trusted_proxies=["10.0.0.0/8"],
                              proxy_secret_file=keys.proxy_file, development=None)
    guard = Guard.from_settings(settings)
    try:
        with uvicorn_server(create_app(settings, guard=guard), request.param) as server:
            yield server, tmp_path / "audit.db"
    finally:
        guard.close()


def test_forwarded_for_and_caller_header_get_401(served: tuple[UvicornThread, Path]) -> None:
    server, db = served
    response = httpx.get(server.url + PAYMENT, headers=SPOOF)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["reason"] == "unauthenticated"
    assert "payment_card" not in response.text
    row = audit_rows(db, "event_id = ?", (body["decision_id"],))[0]
    assert (row["caller"], row["reason"], row["allowed"]) == ("", "unauthenticated", 0)
    assert audit_rows(db, "caller = 'svc:billing'") == []


@pytest.mark.parametrize("secret", ["", "guess" * 8, "proxy-" + "p" * 26 + "-secreT"])
def test_a_wrong_proxy_secret_gets_401(served: tuple[UvicornThread, Path], secret: str) -> None:
    server, _ = served
    response = httpx.get(server.url + PAYMENT,
                         headers={**SPOOF, "x-guard-proxy-secret": secret})
    assert response.status_code == 401
    assert response.json()["reason"] == "unauthenticated"


def test_the_proxy_with_its_secret_asserts_the_caller(
    served: tuple[UvicornThread, Path], keys: Keys
) -> None:
    server, db = served
    response = httpx.get(server.url + PAYMENT,
                         headers={**SPOOF, "x-guard-proxy-secret": keys.proxy_secret})
    assert response.status_code == 200, response.text
    row = audit_rows(db, "event_id = ?", (response.headers["x-guard-decision-id"],))[0]
    assert (row["caller"], row["allowed"]) == ("svc:billing", 1)


def test_the_secret_from_outside_the_listed_addresses_gets_401(
    served: tuple[UvicornThread, Path], keys: Keys
) -> None:
    server, _ = served
    # Without X-Forwarded-For the peer is 127.0.0.1, outside 10.0.0.0/8.
    headers = {k: v for k, v in SPOOF.items() if k != "x-forwarded-for"}
    response = httpx.get(server.url + PAYMENT,
                         headers={**headers, "x-guard-proxy-secret": keys.proxy_secret})
    assert response.status_code == 401


def test_trusted_proxies_alone_refuse_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "GUARD_CONFIG": os.devnull,
           "GUARD_IDENTITY__TRUSTED_PROXIES": '["10.0.0.0/8"]'}
    for command in ([sys.executable, "-m", "examples.customers", "--print-only"],
                    [str(Path(sys.executable).with_name("guard")), "sidecar", "--port",
                     str(free_port())]):
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        errors = [line for line in done.stderr.splitlines() if "proxy_secret_file" in line]
        assert len(errors) == 1, done.stderr
        assert "Traceback" not in done.stderr
