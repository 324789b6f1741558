"""Real clients: nginx ``auth_request`` against the sidecar, and the sidecar proxying to nginx."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import (
    Nginx,
    ServerThread,
    audit_rows,
    free_port,
    need_nginx,
    policy_copy,
    poll,
    serve_sidecar,
    sidecar_settings,
)

pytestmark = pytest.mark.nginx

POLICIES = Path(__file__).resolve().parents[3] / "policies"
ECHO = (
    'return 200 "caller=$http_x_guard_caller purpose=$http_x_guard_purpose '
    'decision=$http_x_guard_decision_id xcaller=$http_x_caller cookie=$http_cookie '
    'uri=$request_uri\\n";'
)


def _auth(keys: Any, caller: str, purpose: str) -> dict[str, str]:
    return {"authorization": f"Bearer {keys.mint('hs', sub=caller)}", "x-purpose": purpose}


@pytest.fixture(scope="module")
def auth_request(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[tuple[str, Path]]:
    """nginx in front of an echo upstream, asking the sidecar via auth_request."""
    need_nginx()
    tmp = tmp_path_factory.mktemp("authreq")
    policy = policy_copy(tmp / "policy", POLICIES)
    front, upstream = free_port(), free_port()
    with serve_sidecar(sidecar_settings(tmp, policy, keys.identity())) as sidecar:
        nginx = Nginx(
            tmp / "nginx",
            f"""
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ {ECHO} }}
    }}
    server {{
        listen 127.0.0.1:{front};
        location = /_guard {{
            internal;
            proxy_pass http://127.0.0.1:{sidecar.port}/v1/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
        location / {{
            auth_request /_guard;
            auth_request_set $guard_caller $upstream_http_x_guard_caller;
            auth_request_set $guard_purpose $upstream_http_x_guard_purpose;
            auth_request_set $guard_decision $upstream_http_x_guard_decision_id;
            auth_request_set $guard_version $upstream_http_x_guard_policy_version;
            proxy_set_header X-Guard-Caller $guard_caller;
            proxy_set_header X-Guard-Purpose $guard_purpose;
            proxy_set_header X-Guard-Decision-Id $guard_decision;
            proxy_set_header X-Guard-Policy-Version $guard_version;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "";
            proxy_set_header X-Caller "";
            proxy_set_header X-Guard-Proxy-Secret "";
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}""",
        ).start(front, upstream)
        try:
            yield f"http://127.0.0.1:{front}", tmp / "audit.db"
        finally:
            nginx.stop()


def test_nginx_auth_request_allows_and_passes_the_verified_caller(
    auth_request: tuple[str, Path], keys: Any
) -> None:
    url, db = auth_request
    headers = {
        **_auth(keys, "svc:crm", "relationship.management"),
        "x-guard-caller": "svc:support",  # forged: nginx must replace it
    }
    resp = httpx.get(f"{url}/customers/42", headers=headers)
    assert resp.status_code == 200
    fields = dict(part.split("=", 1) for part in resp.text.split())
    assert fields["caller"] == "svc:crm"
    assert fields["purpose"] == "relationship.management"
    rows = audit_rows(db, "event_id = ?", (fields["decision"],))
    assert len(rows) == 1
    assert (rows[0]["allowed"], rows[0]["reason"], rows[0]["http_route"]) == (
        1,
        "allowed",
        "/customers/{customer_id}",
    )


@pytest.mark.parametrize(
    ("caller", "purpose", "status", "reason"),
    [
        ("svc:analytics", "analytics.improvement", 403, "category_not_in_purpose"),
        ("grp:exalens-us", "business.administration", 403, "category_not_granted"),
        ("svc:crm", "marketing.third_party", 403, "purpose_not_granted"),
        (None, "relationship.management", 401, "unauthenticated"),
    ],
)
def test_nginx_auth_request_denies_and_every_denial_is_audited(
    auth_request: tuple[str, Path],
    keys: Any,
    caller: str | None,
    purpose: str,
    status: int,
    reason: str,
) -> None:
    url, db = auth_request
    before = len(audit_rows(db, "reason = ?", (reason,)))
    headers = _auth(keys, caller, purpose) if caller else {"x-purpose": purpose}
    resp = httpx.get(f"{url}/customers/7", headers=headers)
    assert resp.status_code == status
    assert "caller=" not in resp.text  # the upstream was never reached
    rows = audit_rows(db, "reason = ?", (reason,))
    assert len(rows) == before + 1
    assert rows[-1]["allowed"] == 0
    assert rows[-1]["http_route"] == "/customers/{customer_id}"


def _raw_get(url: str, target: str, headers: dict[str, str]) -> tuple[int, str]:
    """GET ``target`` exactly as written on the request line (no client normalises it)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("latin-1")


@pytest.mark.parametrize(
    "target",
    [
        "/public/x#/../../customers/c-0001",  # nginx forwards the fragment; the guard saw /public/x
        "/public/x?#/../../customers/c-0001",
        "/public/x/%2e%2e/%2e%2e/customers/c-0001",
        "/public/x;/../../customers/c-0001",
        "//customers/c-0001",
    ],
)
def test_nginx_check_refuses_what_it_cannot_judge_as_nginx_forwards_it(
    auth_request: tuple[str, Path], keys: Any, target: str
) -> None:
    url, db = auth_request
    before = len(audit_rows(db, "http_route = '<refused>'"))
    status, body = _raw_get(url, target, _auth(keys, "svc:crm", "relationship.management"))
    assert status != 200
    assert "caller=" not in body  # the upstream was never reached
    refused = audit_rows(db, "http_route = '<refused>'")
    if status == 400 and "nginx" in body:  # nginx itself refused the request line
        return
    assert len(refused) == before + 1  # the refusal is an audit event, with the caller
    assert (refused[-1]["reason"], refused[-1]["caller"]) == ("malformed_request", "svc:crm")


def test_nginx_forwards_exactly_the_target_the_guard_judged(
    auth_request: tuple[str, Path], keys: Any
) -> None:
    url, db = auth_request
    target = "/customers/c%3A0001?fields=all"  # an escape every server decodes alike
    status, body = _raw_get(url, target, _auth(keys, "svc:crm", "relationship.management"))
    assert status == 200
    fields = dict(part.split("=", 1) for part in body.split())
    assert fields["uri"] == target
    row = audit_rows(db, "event_id = ?", (fields["decision"],))[0]
    assert row["http_route"] == "/customers/{customer_id}"


@pytest.fixture(scope="module")
def files_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """nginx serving (and accepting PUT of) files, plus an echo of the guard headers."""
    need_nginx()
    tmp = tmp_path_factory.mktemp("files")
    (tmp / "files").mkdir()
    port = free_port()
    nginx = Nginx(
        tmp / "nginx",
        f"""
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location /files/ {{
            root {tmp};
            dav_methods PUT;
            create_full_put_path on;
        }}
        location /echo/ {{ add_header Set-Cookie "sid=from-upstream"; {ECHO} }}
    }}""",
    ).start(port)
    try:
        yield port, tmp / "files"
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, keys: Any, files_upstream: tuple[int, Path]
) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("proxy")
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(
        tmp,
        policy,
        keys.identity(),
        upstream=f"http://127.0.0.1:{files_upstream[0]}",
    )
    with serve_sidecar(settings) as server:
        yield server, tmp / "audit.db"


def _chunks(total: int, size: int = 1 << 16) -> Iterator[bytes]:
    block = bytes(range(256)) * (size // 256)
    for start in range(0, total, size):
        yield block[: min(size, total - start)]


def test_proxy_streams_a_large_upload_and_download(
    proxy: tuple[ServerThread, Path], files_upstream: tuple[int, Path], keys: Any
) -> None:
    server, db = proxy
    size = 50 * 1024 * 1024
    expected = hashlib.sha256()
    for chunk in _chunks(size):
        expected.update(chunk)
    with httpx.Client(timeout=60) as client:
        put = client.put(
            f"{server.url}/files/big.bin",
            content=_chunks(size),
            headers=_auth(keys, "svc:web", "customer.registration"),
        )
        assert put.status_code in (201, 204), put.text
        assert (files_upstream[1] / "big.bin").stat().st_size == size
        digest, got = hashlib.sha256(), 0
        headers = _auth(keys, "svc:web", "customer.registration")
        with client.stream("GET", f"{server.url}/files/big.bin", headers=headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-length"] == str(size)
            for chunk in resp.iter_raw():
                digest.update(chunk)
                got += len(chunk)
    assert got == size
    assert digest.hexdigest() == expected.hexdigest()
    # The write: its decision durable before the upload, its status queued after it as an
    # outcome. The read: one record, the decision with its status, durable before the download.
    rows = poll(
        lambda: (
            rows
            if len(rows := audit_rows(db, "http_route = ?", ("/files/{name}",))) >= 3
            else None
        )
    )
    put_status = rows[1]["http_status"] if rows[1]["kind"] == "outcome" else rows[2]["http_status"]
    assert put_status in (201, 204)
    assert sorted((r["kind"], r["action"], r["http_status"]) for r in rows) == sorted(
        [("decision", "write", None), ("outcome", "", put_status), ("decision", "read", 200)]
    )


def test_proxy_replaces_identity_headers_with_the_verified_ones(
    proxy: tuple[ServerThread, Path], keys: Any
) -> None:
    server, db = proxy
    headers = {
        **_auth(keys, "svc:crm", "relationship.management"),
        "x-guard-caller": "svc:support",
        "x-guard-decision-id": "forged",
        "x-caller": "svc:support",
    }
    resp = httpx.get(f"{server.url}/echo/me", headers=headers)
    assert resp.status_code == 200
    fields = dict(part.split("=", 1) for part in resp.text.split())
    assert fields["caller"] == "svc:crm"
    assert fields["purpose"] == "relationship.management"
    assert fields["xcaller"] == ""
    # The upstream was told the decision's id before it was durable; the id is the record's.
    decision = audit_rows(db, "event_id = ?", (fields["decision"],))
    assert [(r["kind"], r["allowed"], r["http_status"]) for r in decision] == [
        ("decision", 1, 200)]
    assert audit_rows(db, "decision_ref = ?", (fields["decision"],)) == []


def test_proxy_never_replays_one_callers_cookies_for_another(
    proxy: tuple[ServerThread, Path], keys: Any
) -> None:
    server, _ = proxy
    first = httpx.get(
        f"{server.url}/echo/a", headers=_auth(keys, "svc:crm", "relationship.management")
    )
    assert first.headers["set-cookie"] == "sid=from-upstream"
    second = httpx.get(f"{server.url}/echo/b", headers=_auth(keys, "svc:support", "rights.request"))
    assert second.status_code == 200
    fields = dict(part.split("=", 1) for part in second.text.split())
    assert fields["caller"] == "svc:support"
    assert fields["cookie"] == ""


def test_proxy_denial_never_reaches_the_upstream(
    proxy: tuple[ServerThread, Path], files_upstream: tuple[int, Path], keys: Any
) -> None:
    server, _ = proxy
    resp = httpx.put(
        f"{server.url}/files/denied.bin",
        content=b"secret",
        headers=_auth(keys, "svc:analytics", "analytics.improvement"),
    )
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["reason"] == "category_not_in_purpose"
    assert not (files_upstream[1] / "denied.bin").exists()


def test_unreachable_upstream_is_a_502_recorded_with_the_decision(
    tmp_path: Path, keys: Any
) -> None:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = sidecar_settings(
        tmp_path, policy, keys.identity(), upstream=f"http://127.0.0.1:{free_port()}"
    )
    with serve_sidecar(settings) as server:
        resp = httpx.get(
            f"{server.url}/customers/1", headers=_auth(keys, "svc:crm", "relationship.management")
        )
    assert resp.status_code == 502
    problem = resp.json()
    assert resp.headers["content-type"] == "application/problem+json"
    assert problem["reason"] == "upstream_unavailable"
    rows = audit_rows(tmp_path / "audit.db", "event_id = ? OR decision_ref = ?",
                      (problem["decision_id"], problem["decision_id"]))
    assert [(r["kind"], r["allowed"], r["http_status"]) for r in rows] == [("decision", 1, 502)]
