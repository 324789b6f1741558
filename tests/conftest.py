"""Shared fixtures: the shipped policy paths and a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "policies"


@pytest.fixture(scope="session")
def policy_dir() -> Path:
    """The shipped policy folder (model.conf, rules.csv, routes.csv, tests.csv)."""
    return POLICY_DIR


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    candidates: list[Path] = []
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for cand in candidates:
        if (cand / "initdb").exists() and (cand / "postgres").exists():
            return cand
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run as the postgres user when we are root (the server refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throw-away PostgreSQL server on loopback; yield a connection URL.

    Skips with a clear message when the server binaries are not installed, unless
    GUARD_REQUIRE_POSTGRES=1 (set by CI), where that is a failure.
    """
    bindir = _pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("GUARD_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's 0700 tmp tree: the postgres user must reach it.
    base = Path(tempfile.mkdtemp(prefix="guard-pg-"))
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth=trust", "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    port = free_port()
    log = base / "server.log"
    server = subprocess.Popen(
        _as_postgres([str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                      "-h", "127.0.0.1", "-k", str(base), "-c", "fsync=on",
                      "-c", "max_connections=200"]),
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("CREATE DATABASE guard_test")
            break
        except psycopg.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"PostgreSQL did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/guard_test"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)
