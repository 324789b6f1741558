"""Development tokens work only in development mode, and development mode is visible.

A token signed with the local development key must be refused once an
identity provider (JWKS file or HS256 secret) is configured, even though the
example service creates that key on disk; development mode is announced at
start and shown by ``/readyz`` (the example's and the sidecar's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sidecarkit import policy_copy, sidecar_settings
from tokenkit import Keys, guard_settings

from bench._pg import free_port
from examples.customers import create_app
from guard._guard import Guard
from guard.cli._token import issue_token
from guard.config import IdentitySettings
from guard.policy import resolve_policy_dir

REPO = Path(__file__).resolve().parents[2]
CUSTOMER = "/customers/c-0001"


class Example:
    """``python -m examples.customers`` in its own folder, as ``scripts/run`` starts it."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "examples.customers", "--port", str(self.port)],
            cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO),
                          "GUARD_CONFIG": os.devnull, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"the example did not start:\n{out}\n{err}")
            time.sleep(0.1)

    def stop(self) -> tuple[str, str]:
        self.proc.terminate()
        return self.proc.communicate(timeout=20)


@pytest.fixture
def example(request: pytest.FixtureRequest, tmp_path: Path, keys: Keys) -> Iterator[Example]:
    env = {"GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file)} if request.param else {}
    served = Example(tmp_path, env)
    try:
        yield served
    finally:
        served.stop()


def _dev_token(cwd: Path, caller: str = "svc:crm") -> str:
    # Signed with the key the example keeps in its folder, as `guard token issue` would.
    return issue_token(IdentitySettings(dev_key=cwd / ".guard" / "dev-token.key"), caller)


@pytest.mark.parametrize("example", [True], indirect=True, ids=["hs256"])
def test_dev_token_refused_when_hs256_is_configured(
    example: Example, tmp_path: Path, keys: Keys
) -> None:
    headers = {"x-purpose": "relationship.management"}
    refused = httpx.get(example.url + CUSTOMER,
                        headers={**headers, "authorization": f"Bearer {_dev_token(tmp_path)}"})
    assert refused.status_code == 401
    assert refused.json()["reason"] == "unauthenticated"
    allowed = httpx.get(example.url + CUSTOMER,
                        headers={**headers, "authorization": f"Bearer {keys.mint('hs')}"})
    assert allowed.status_code == 200
    ready = httpx.get(example.url + "/readyz").json()
    assert ready["development_mode"] is False
    out, err = example.stop()
    assert "development tokens are refused" in out
    assert "export TOKEN_" not in out.replace("# export TOKEN_", "")
    assert "development mode" not in err.lower()


@pytest.mark.parametrize("example", [False], indirect=True, ids=["no-provider"])
def test_dev_token_works_in_development_mode_and_says_so(
    example: Example, tmp_path: Path
) -> None:
    response = httpx.get(example.url + CUSTOMER, headers={
        "x-purpose": "relationship.management",
        "authorization": f"Bearer {_dev_token(tmp_path)}"})
    assert response.status_code == 200
    ready = httpx.get(example.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["development_mode"] is True
    out, err = example.stop()
    assert "DEVELOPMENT MODE" in out
    assert "development mode" in err


@pytest.mark.anyio
async def test_dev_key_on_disk_is_still_refused_beside_jwks(tmp_path: Path, keys: Keys) -> None:
    settings = guard_settings(tmp_path, keys, development=None,
                              dev_key=tmp_path / "dev" / "dev-token.key")
    token = issue_token(IdentitySettings(dev_key=settings.identity.dev_key), "svc:crm")
    assert settings.identity.dev_key.exists()  # created before the authenticator
    guard = Guard.from_settings(settings)
    headers = {"x-purpose": "relationship.management"}
    try:
        transport = httpx.ASGITransport(app=create_app(settings, guard=guard))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            dev = await client.get(CUSTOMER, headers={**headers,
                                                      "authorization": f"Bearer {token}"})
            jwks = await client.get(CUSTOMER, headers={
                **headers, "authorization": f"Bearer {keys.mint('rsa')}"})
            ready = await client.get("/readyz")
    finally:
        guard.close()
    assert (dev.status_code, dev.json()["reason"]) == (401, "unauthenticated")
    assert jwks.status_code == 200
    assert ready.json()["development_mode"] is False


@pytest.mark.anyio
async def test_sidecar_readyz_says_development_mode(tmp_path: Path, keys: Keys) -> None:
    from middleware.sidecar import create_app as create_sidecar

    policy = policy_copy(tmp_path / "policy", resolve_policy_dir(None))
    cases = [(keys.identity(development=None), False), (keys.identity(), True),
             (IdentitySettings(dev_key=keys.dev_key), True)]
    for number, (identity, expected) in enumerate(cases):
        app = create_sidecar(sidecar_settings(tmp_path / str(number), policy, identity))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sc") as client:
                body = (await client.get("/readyz")).json()
        finally:
            app.sidecar.guard.close()
        assert body["development_mode"] is expected, identity


def test_guard_sidecar_announces_development_mode(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("guard")), "sidecar", "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "GUARD_CONFIG": os.devnull},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the sidecar did not start: {proc.communicate()}")
                time.sleep(0.1)
        assert ready.json()["development_mode"] is True
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert [line for line in err.splitlines() if "development mode" in line]
