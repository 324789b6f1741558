"""Shared fixtures: the shipped policy folder and a real PostgreSQL server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._pg import free_port, fresh_database, pg_server

__all__ = ["free_port", "policy_dir", "postgres_url"]

REPO = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO / "policies"


@pytest.fixture(scope="session")
def policy_dir() -> Path:
    """The shipped policy folder (model.conf, rules.csv, routes.csv, tests.csv)."""
    return POLICY_DIR


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
