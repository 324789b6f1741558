"""A caller header asserted without the proxy secret: the audit event names the peer that sent it.

The check endpoint (nginx ``auth_request``, Envoy ext_authz) and the proxy path
both refuse a caller header that comes with a wrong, missing or untrusted proxy
secret as ``unauthenticated``; the event read back from the audit store says
which peer asserted it (``detail`` ``peer:<address>``), so a proxy left with a
rotated-out secret, or a client naming itself, can be found. A real uvicorn
sidecar on loopback, its SQLite store read back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, serve_sidecar, sidecar_settings

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PURPOSE = "relationship.management"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, keys: Any
) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("peer")
    identity = keys.identity(proxy_secret_file=keys.proxy_file, development=False)
    policy = policy_copy(tmp / "policy", POLICIES)
    # The upstream is never reached: every request here is refused before it.
    settings = sidecar_settings(tmp, policy, identity, upstream="http://127.0.0.1:9")
    with serve_sidecar(settings) as server:
        yield server, tmp / "audit.db"


def _event(db: Path, decision_id: str) -> dict[str, Any]:
    rows = audit_rows(db, "event_id = ?", (decision_id,))
    assert len(rows) == 1
    return rows[0]


SECRETS = {"wrong": "w" * 40, "missing": None, "empty": ""}


@pytest.mark.parametrize("secret", sorted(SECRETS))
@pytest.mark.parametrize("path", ["check", "proxy"])
def test_a_caller_header_without_its_secret_names_the_peer(
    served: tuple[ServerThread, Path], keys: Any, secret: str, path: str
) -> None:
    server, db = served
    headers = {"x-caller": "svc:support", "x-purpose": PURPOSE,
               "authorization": f"Bearer {keys.mint('rsa')}"}  # a valid token changes nothing
    if SECRETS[secret] is not None:
        headers["x-guard-proxy-secret"] = str(SECRETS[secret])
    if path == "check":
        url = server.url + "/v1/check"
        headers |= {"x-original-uri": "/echo/x", "x-original-method": "GET"}
    else:
        url = server.url + "/echo/x"
    answer = httpx.get(url, headers=headers, timeout=10)
    assert answer.status_code == 401
    event = _event(db, answer.json()["decision_id"])
    assert event["reason"] == "unauthenticated"
    assert event["caller"] == ""
    assert event["detail"] == "peer:127.0.0.1"
    assert event["rule"] == '["check:unauthenticated:proxy_not_authenticated"]'


@pytest.mark.parametrize("path", ["check", "proxy"])
def test_an_invalid_caller_header_with_the_secret_names_the_peer(
    served: tuple[ServerThread, Path], keys: Any, path: str
) -> None:
    server, db = served
    headers = {"x-caller": "svc support", "x-purpose": PURPOSE,
               "x-guard-proxy-secret": keys.proxy_secret}
    url = server.url + ("/v1/check" if path == "check" else "/echo/x")
    if path == "check":
        headers |= {"x-original-uri": "/echo/x", "x-original-method": "GET"}
    answer = httpx.get(url, headers=headers, timeout=10)
    assert answer.status_code == 401
    event = _event(db, answer.json()["decision_id"])
    assert event["detail"] == "peer:127.0.0.1"
    assert event["rule"] == '["check:unauthenticated:caller_header_invalid"]'


def test_a_token_refusal_names_no_peer(served: tuple[ServerThread, Path]) -> None:
    """Only an asserted caller header is a proxy's claim; a bad token's event is as before."""
    server, db = served
    answer = httpx.get(server.url + "/v1/check", timeout=10,
                       headers={"x-original-uri": "/echo/x", "x-original-method": "GET",
                                "authorization": "Bearer not-a-token", "x-purpose": PURPOSE})
    assert answer.status_code == 401
    assert _event(db, answer.json()["decision_id"])["detail"] is None
