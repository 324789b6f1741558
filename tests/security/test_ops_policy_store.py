"""Replicas on a PostgreSQL policy store: start past broken rows, report the watcher's real state.

Everything runs against the real PostgreSQL of ``tests/conftest.py``, each test
in a database of its own, with ``guard sidecar`` processes as an operator runs them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opskit import POLICIES, SidecarProcess
from sidecarkit import poll

from guard.policy import load_policy
from guard.policy._pgsource import CHANNEL, TABLE, push_policy_dir

pytestmark = pytest.mark.postgres

LINT_ERROR = "p, svc:crm, relationship.management\n"  # wrong arity: refused by lint


@pytest.fixture
def store(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A policy store of this test's own: (its URL, the server's admin URL)."""
    name = "ops_policy_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    server = postgres_url.rsplit("/", 1)[0]
    yield f"{server}/{name}", postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _write_row(url: str, version: str, rules_text: str) -> int:
    """Store a row as something other than ``guard policy push`` might (no lint), and notify."""
    model = (POLICIES / "model.conf").read_text()
    with psycopg.connect(url) as conn:
        row = conn.execute(
            f"INSERT INTO {TABLE} (version, model_text, rules_text, origin) "
            "VALUES (%s, %s, %s, 'by hand') RETURNING id",
            (version, model, rules_text),
        ).fetchone()
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, version))
        conn.commit()
    assert row is not None
    return int(row[0])


def _sidecar(tmp: Path, url: str, keys: Any) -> SidecarProcess:
    env = {"GUARD_POLICY__SOURCE": url, "GUARD_POLICY__WATCH": "true",
           "GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file)}
    return SidecarProcess(tmp, env, keys.mint("hs", sub="svc:crm"))


def test_a_replica_starts_on_the_newest_good_policy_and_says_what_it_skipped(
    tmp_path: Path, store: tuple[str, str], keys: Any
) -> None:
    url, _ = store
    good = push_policy_dir(url, POLICIES)
    rules = (POLICIES / "rules.csv").read_text()
    # A row written around `guard policy push` (its version does not match its texts),
    # then a policy the lint of this guard refuses.
    around = _write_row(url, "sha256:" + "0" * 64, rules)
    unlinted = _write_row(url, "sha256:" + "1" * 64, rules + LINT_ERROR)

    sidecar = _sidecar(tmp_path, url, keys)
    try:
        assert sidecar.get("/healthz").json()["policy_version"] == good.version
        body = sidecar.get("/readyz").json()
        assert body["status"] == "ready"
        skipped = body["policy_skipped_at_start"]
        assert [s["id"] for s in skipped] == [unlinted, around]
        assert "wrong-arity" in skipped[0]["error"]
        assert f"compiles to {good.version}" in skipped[1]["error"]
        assert body["last_reload_error"]  # the newest row still does not load
        log = sidecar.log_text()
        assert f"newest stored policy #{unlinted}" in log
        assert f"started on #{good.id}" in log
    finally:
        sidecar.stop()
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        details = [row[0] for row in conn.execute(
            "SELECT detail FROM audit_event WHERE kind = 'policy_rejected'")]
    for row_id in (unlinted, around):
        assert any(f"stored policy #{row_id}" in d and "skipped at start" in d
                   for d in details), details


def test_no_loadable_policy_in_the_store_is_one_clear_line(
    tmp_path: Path, store: tuple[str, str], keys: Any
) -> None:
    url, _ = store
    push_policy_dir(url, POLICIES)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"UPDATE {TABLE} SET version = 'sha256:stale'")
    with pytest.raises(pytest.fail.Exception, match="exited with 2"):
        _sidecar(tmp_path, url, keys)
    log = (tmp_path / "sidecar.log").read_text()
    assert "no policy stored in" in log
    assert "loads (1 tried)" in log
    assert "Traceback" not in log


def test_a_good_push_of_the_version_in_force_clears_the_reload_error(
    tmp_path: Path, store: tuple[str, str], keys: Any
) -> None:
    url, _ = store
    good = push_policy_dir(url, POLICIES)
    sidecar = _sidecar(tmp_path, url, keys)
    try:
        assert sidecar.get("/readyz").json()["last_reload_error"] is None
        rules = (POLICIES / "rules.csv").read_text()
        _write_row(url, "sha256:" + "2" * 64, rules + LINT_ERROR)
        error = poll(lambda: sidecar.get("/readyz").json()["last_reload_error"], timeout=20)
        assert "wrong-arity" in error
        assert push_policy_dir(url, POLICIES).version == good.version  # the same version again
        poll(lambda: sidecar.get("/readyz").json()["last_reload_error"] is None, timeout=20)
        assert sidecar.get("/healthz").json()["policy_version"] == good.version
    finally:
        sidecar.stop()


def test_readyz_reports_a_lost_policy_store_connection_and_its_return(
    tmp_path: Path, store: tuple[str, str], keys: Any
) -> None:
    url, admin = store
    name = url.rsplit("/", 1)[1]
    push_policy_dir(url, POLICIES)
    sidecar = _sidecar(tmp_path, url, keys)
    try:
        body = sidecar.get("/readyz").json()
        assert body["policy_store_listening"] is True
        connected_at = body["policy_store"]["connected_at"]
        assert connected_at is not None
        assert body["policy_store"]["lost_at"] is None

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")  # no reconnecting
            ended = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND query LIKE 'LISTEN%%'", (name,)).fetchone()
        assert ended == (1,)
        lost = poll(lambda: (b := sidecar.get("/readyz").json())["policy_store_listening"] is False
                    and b, timeout=20, step=0.1)
        assert lost["status"] == "ready"  # the policy in force still decides
        assert lost["policy_store"]["listening"] is False
        assert lost["policy_store"]["connected_at"] == connected_at  # when it last listened
        assert lost["policy_store"]["lost_at"] >= connected_at
        assert lost["policy_store"]["error"]  # why: the connection ended, ...
        poll(lambda: "not currently accepting connections"  # ... then why it cannot come back
             in sidecar.get("/readyz").json()["policy_store"]["error"], timeout=20, step=0.1)
        assert "policy store watcher lost" in sidecar.log_text()

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        back = poll(lambda: (b := sidecar.get("/readyz").json())["policy_store_listening"]
                    and b, timeout=20, step=0.1)
        assert back["policy_store"]["lost_at"] is None
        assert back["policy_store"]["connected_at"] > connected_at
        log = sidecar.log_text()
        assert log.count("policy store watcher lost") == 1, log  # once, not once per retry
        assert "policy store watcher reconnected" in log
        assert load_policy(POLICIES).version == sidecar.get("/healthz").json()["policy_version"]
    finally:
        sidecar.stop()
