"""Two ``guard sidecar`` processes on one PostgreSQL policy store: a push reaches both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sidecarkit import policy_copy, poll, version_of, wait_for_port

from bench._pg import free_port
from guard.policy._pgsource import load_latest, push_policy_dir

pytestmark = pytest.mark.postgres

POLICIES = Path(__file__).resolve().parents[3] / "policies"
GUARD = Path(sys.executable).with_name("guard")


@pytest.fixture(scope="module")
def store(postgres_url: str) -> str:
    name = "replicas_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def _start(tmp: Path, store: str, routes: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    tmp.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "GUARD_CONFIG": os.devnull,
        "GUARD_POLICY__SOURCE": store,
        "GUARD_AUDIT__STORE": f"sqlite:///{tmp / 'audit.db'}",
        "GUARD_AUDIT__HMAC_KEY": str(tmp / "hmac.key"),
        "GUARD_AUDIT__SIGNING_KEY": str(tmp / "signing.key"),
        "GUARD_IDENTITY__DEV_KEY": str(tmp / "dev.key"),
        "GUARD_SIDECAR__ROUTES": str(routes),
        "GUARD_SIDECAR__LOG_LEVEL": "warning",
    }
    log = tmp / "sidecar.log"
    proc = subprocess.Popen(
        [str(GUARD), "sidecar", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    wait_for_port(port, proc=proc, log=log)
    return proc, f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replicas")


@pytest.fixture(scope="module")
def replicas(base: Path, store: str) -> Iterator[list[tuple[str, Path]]]:
    tmp_path = base
    policy = policy_copy(tmp_path / "policy", POLICIES)
    push_policy_dir(store, policy)
    procs = [_start(tmp_path / f"r{i}", store, policy / "routes.csv") for i in range(2)]
    try:
        yield [(url, log) for _, url, log in procs]
    finally:
        for proc, _, _ in procs:
            proc.terminate()
        for proc, _, _ in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_push_reaches_both_replicas(
    replicas: list[tuple[str, Path]], store: str, base: Path
) -> None:
    first = push_policy_dir(store, base / "policy")
    assert [version_of(url) for url, _ in replicas] == [first.version] * 2
    # Ready means LISTENing: the watcher starts with the app, before it serves.
    for url, _ in replicas:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200
        assert ready.json()["policy_store_listening"] is True

    changed = base / "policy"
    with (changed / "rules.csv").open("a") as f:
        f.write("\np, svc:analytics, analytics.improvement, usage, write\n")
    pushed = subprocess.run(
        [str(GUARD), "policy", "push", "--policy-dir", str(changed), "--store", store],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    second = load_latest(store)
    assert pushed.stdout.startswith(f"pushed {second.version} (#{second.id})")
    seen = {}
    for url, _ in replicas:
        poll(lambda url=url: version_of(url) == second.version, timeout=30, step=0.01)
        seen[url] = time.time() - second.pushed_at.timestamp()  # same host clock
    # Reported, not asserted (no timing asserts): the target is within 1 s.
    print(f"push in force on both replicas {max(seen.values()) * 1000:.0f} ms after its commit")
    assert second.version != first.version


def test_a_broken_push_cannot_happen_and_replicas_keep_their_policy(
    replicas: list[tuple[str, Path]], store: str, tmp_path: Path
) -> None:
    before = [version_of(url) for url, _ in replicas]
    broken = policy_copy(tmp_path / "broken", POLICIES)
    with (broken / "rules.csv").open("a") as f:
        f.write("\np, svc:crm, relationship.management\n")
    result = subprocess.run(
        [str(GUARD), "policy", "push", "--policy-dir", str(broken), "--store", store],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("guard: error: ")
    assert "wrong-arity" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [version_of(url) for url, _ in replicas] == before
