"""Shared fixtures: the shipped policy folder, a real PostgreSQL server, one collector state."""

from __future__ import annotations

import gc
import os
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx._transports.default
import psycopg
import pytest

from bench._pg import free_port, fresh_database, pg_server
from guard.audit import Store, open_store

__all__ = ["free_port", "pg_url", "policy_dir", "postgres_url", "store_url"]

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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test starts on one heap state: what collection built, frozen.

    ``GuardMiddleware`` (at its app's start-up, or first request) and the sidecar freeze
    the process's heap once, so the first test serving one in process froze the test
    process and the tests after it ran on a heap frozen at a point that depended on
    the order (a census of young objects passed only after such a test). Frozen here,
    those freezes find the heap frozen already and leave it; full collections walk what
    tests make, not the 10^5-10^6 objects of the imports (unfrozen: 54 s of the suite's CPU).
    """
    gc.collect()
    gc.freeze()
    gc.unfreeze = _unfreeze


_thaw = gc.unfreeze
_thawed: list[bool] = []


def _unfreeze() -> None:
    """``gc.unfreeze``, noted for the test's teardown (``gc.get_freeze_count()`` walks every
    frozen object, 50-100 ms here: asked after each test, it was a sixth of the suite)."""
    _thawed.append(True)
    _thaw()


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    """After a test that unfroze the heap (the freeze's own tests), freeze it again, and
    restore the collector's thresholds and switch."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    yield
    if _thawed and not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    _thawed.clear()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()


_make_tls = httpx._transports.default.create_ssl_context
_tls: list[ssl.SSLContext] = []


def _shared_tls(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's TLS context of a client with the defaults, made once for the run.

    Each ``httpx.get`` makes a client, and each client loaded certifi's bundle anew
    (20-50 ms here); the tests make thousands, mostly to plain HTTP on loopback.
    """
    if verify is not True or cert is not None or not trust_env \
            or os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return _make_tls(verify=verify, cert=cert, trust_env=trust_env)
    if not _tls:
        _tls.append(_make_tls())
    return _tls[0]


httpx._transports.default.create_ssl_context = _shared_tls  # type: ignore[assignment]


def _admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL server."""
    name = f"store_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_url(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(_admin_url(postgres_url), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty audit store, once per kind (SQLite, PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An empty audit store, once per kind, its schema made (a module may have its own)."""
    opened = open_store(store_url)
    opened.rows("SELECT 1")  # PostgreSQL: makes the schema
    yield opened
    opened.close()
