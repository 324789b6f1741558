"""Shared fixtures: the shipped policy folder and a real PostgreSQL server."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._pg import fresh_database, pg_server

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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throw-away PostgreSQL server on loopback; yield a database URL.

    Skips with a clear message when the server binaries are not installed, unless
    GUARD_REQUIRE_POSTGRES=1 (set by CI), where that is a failure.
    """
    with pg_server() as url:
        if url is None:
            message = "PostgreSQL server binaries not found (apt-get install postgresql)"
            if os.environ.get("GUARD_REQUIRE_POSTGRES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        yield fresh_database(url, "guard_test")
