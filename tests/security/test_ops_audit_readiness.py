"""A store that refuses writes is not ready, and says why: readiness proves a real write.

Reproduces the review's finding (a read-only audit store: ``/readyz`` 200, every
request denied ``audit_unavailable``, nothing logged) with a real immutable
SQLite file (``chattr +i``) and a real PostgreSQL role that loses INSERT, with
the group-commit writer (with the journal a refusing store only delays the index:
``tests/guard/audit/test_audit_journal.py`` covers its readiness).
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opskit import SidecarProcess, chattr_unsupported

from guard.audit import AuditTrail, EventKind, load_signing_key, open_store
from guard.audit._health import DiskReserve, FailureLog

WRITERS = ["thread"]


@pytest.fixture
def token(keys: Any) -> str:
    """An HS256 service token of svc:crm (not a development token)."""
    minted: str = keys.mint("hs", sub="svc:crm")
    return minted


def _env(keys: Any, writer: str, **more: str) -> dict[str, str]:
    return {"GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file),
            "GUARD_AUDIT__WRITER": writer, **more}


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Files made immutable during the test (``chattr +i``), made mutable again after."""
    why = chattr_unsupported(tmp_path)
    if why is not None:
        pytest.skip(why)
    files: list[Path] = []
    yield files
    for path in files:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("writer", WRITERS)
def test_immutable_sqlite_store_is_not_ready_and_every_failure_is_logged(
    tmp_path: Path, keys: Any, token: str, writer: str, immutable: list[Path]
) -> None:
    db = tmp_path / "audit.db"
    open_store(f"sqlite:///{db}").close()  # an existing store, then made read-only
    subprocess.run(["chattr", "+i", str(db)], check=True)
    immutable.append(db)
    sidecar = SidecarProcess(tmp_path, _env(keys, writer), token)
    try:
        answers = [sidecar.decide() for _ in range(10)]
        assert {(a["allowed"], a["reason"]) for a in answers} == {(False, "audit_unavailable")}
        ready = sidecar.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready"
        assert body["audit"]["ok"] is False
        assert "readonly" in body["audit"]["detail"]
        log = sidecar.log_text()
        # The cause is logged, once for the run of failures (not once per request).
        failed = [line for line in log.splitlines() if "failed: " in line and "readonly" in line]
        assert len(failed) == 1, log
        assert str(db) in failed[0]
    finally:
        sidecar.stop()


@pytest.fixture
def app_database(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database owned by a login role that is not a superuser: (role's URL, admin URL)."""
    suffix = uuid.uuid4().hex[:10]
    role, name = f"guard_app_{suffix}", f"ops_audit_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {name} OWNER {role}")
    server = postgres_url.rsplit("/", 1)[0]
    app_url = server.replace("postgres@", f"{role}@", 1) + f"/{name}"
    yield app_url, f"{server}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.postgres
@pytest.mark.parametrize("writer", WRITERS)
def test_postgres_store_that_loses_insert_is_not_ready_then_ready_again(
    tmp_path: Path, keys: Any, token: str, writer: str, app_database: tuple[str, str]
) -> None:
    app_url, admin_url = app_database
    role = app_url.split("://", 1)[1].split("@", 1)[0]
    env = _env(keys, writer, GUARD_AUDIT__STORE=app_url,
               GUARD_AUDIT__READINESS_PROBE_SECONDS="0.2")
    sidecar = SidecarProcess(tmp_path, env, token)
    try:
        assert sidecar.decide()["allowed"] is True
        assert sidecar.wait_ready(True)["audit"]["ok"] is True
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"REVOKE INSERT ON audit_event FROM {role}")
        # No request needed: readiness writes a heartbeat and sees the refusal.
        body = sidecar.wait_ready(False)
        assert "permission denied" in body["audit"]["detail"]
        assert sidecar.decide()["reason"] == "audit_unavailable"
        log = sidecar.log_text()
        assert "permission denied for table audit_event" in log

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"GRANT INSERT ON audit_event TO {role}")
        assert sidecar.wait_ready(True)["audit"]["detail"].startswith("audit store writable")
        assert sidecar.decide()["allowed"] is True
        assert "works again after" in sidecar.log_text()
        with psycopg.connect(admin_url) as conn:
            kinds = {row[0] for row in conn.execute("SELECT kind FROM audit_event")}
        assert EventKind.HEARTBEAT.value in kinds  # the probe is a real, chained event
    finally:
        sidecar.stop()


def test_failures_are_logged_first_then_at_most_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="guard.audit")
    quiet = FailureLog("audit store write", interval=3600)
    for i in range(50):
        quiet.failed(f"disk I/O error {i}")
    assert [r.getMessage() for r in caplog.records] == [
        "audit store write failed: disk I/O error 0"]
    caplog.clear()
    every = FailureLog("audit store write", interval=0)
    every.failed("first")
    every.failed("second")
    every.failed("third")
    every.succeeded()
    every.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "audit store write failed: first"
    assert lines[1].startswith("audit store write still failing: 1 more failure(s)")
    assert lines[2].endswith("latest: third")
    assert lines[3].startswith("audit store write works again after 3 failure(s)")
    assert len(lines) == 4


def test_an_idle_trail_proves_readiness_with_a_heartbeat_not_a_flood(
    tmp_path: Path, keys: Any
) -> None:
    """Readiness writes at most one heartbeat per interval, however often it is asked."""
    trail = AuditTrail(open_store(f"sqlite:///{tmp_path / 'audit.db'}"),
                       load_signing_key(tmp_path / "k" / "signing.key", create=True),
                       probe_interval=3600)
    try:
        for _ in range(100):
            assert trail.ready() == (True, "audit store writable")
        rows = trail.store.rows("SELECT kind, detail FROM audit_event")
    finally:
        trail.close()
    assert rows == [("heartbeat", "readiness probe")]


def test_reserve_reads_free_space_at_most_once_per_period(tmp_path: Path) -> None:
    reserve = DiskReserve(tmp_path / "audit.db", 1 << 62, every=3600)  # more than any disk
    first = reserve.shortfall()
    assert first is not None
    assert "below the reserve" in first
    reserve.reserve_bytes = 1  # the cached reading stands until the period is over
    assert reserve.shortfall() == first
    assert DiskReserve(tmp_path / "audit.db", 0).shortfall() is None  # 0: no reserve


def test_journal_that_becomes_immutable_is_not_ready_and_says_why(
    tmp_path: Path, keys: Any, token: str, immutable: list[Path]
) -> None:
    """``audit.writer = "journal"``: the same proof of a real append, on a real immutable file."""
    env = _env(keys, "journal", GUARD_AUDIT__READINESS_PROBE_SECONDS="0.2")
    sidecar = SidecarProcess(tmp_path, env, token)
    try:
        assert sidecar.decide()["allowed"] is True
        assert sidecar.wait_ready(True)["audit"]["ok"] is True
        segments = sorted((tmp_path / "audit.db.journal").rglob("*.seg"))
        assert segments, list((tmp_path / "audit.db.journal").rglob("*"))
        for segment in segments:
            subprocess.run(["chattr", "+i", str(segment)], check=True)
            immutable.append(segment)
        body = sidecar.wait_ready(False)  # no request needed: a heartbeat is refused
        assert "Operation not permitted" in body["audit"]["detail"]
        assert sidecar.decide()["reason"] == "audit_unavailable"
        failed = [line for line in sidecar.log_text().splitlines()
                  if "audit journal write to" in line and "failed:" in line]
        assert len(failed) == 1, sidecar.log_text()
    finally:
        sidecar.stop()
