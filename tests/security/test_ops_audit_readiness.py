"""Readiness proves a real write, and says why not; a refusing store only delays the index.

A journal that refuses appends (a real immutable segment, ``chattr +i``) is not
ready and says why, with no request needed. A store that refuses inserts (a
real immutable SQLite file, a real PostgreSQL role that loses INSERT) does not
refuse decisions, which are durable in the journal: ``/readyz`` stays 200 and
says the index is behind and why, the cause is logged once, and the index
catches up once the PostgreSQL store takes writes again (an SQLite file that was
immutable when the index opened it stays read-only to that process: no catch-up).
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
from sidecarkit import poll

from guard.audit import open_store
from guard.audit._health import DiskReserve, FailureLog


@pytest.fixture
def token(keys: Any) -> str:
    """An HS256 service token of svc:crm (not a development token)."""
    minted: str = keys.mint("hs", sub="svc:crm")
    return minted


def _env(keys: Any, **more: str) -> dict[str, str]:
    return {"GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file), **more}


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


def _index_behind(sidecar: SidecarProcess, words: str) -> dict[str, Any]:
    """Poll ``/readyz`` until it is ready and says the index is behind because of ``words``."""

    def check() -> dict[str, Any] | None:
        resp = sidecar.get("/readyz")
        body: dict[str, Any] = resp.json()
        detail = body["audit"]["detail"]
        return body if resp.status_code == 200 and "index behind" in detail and words in detail \
            else None

    found: dict[str, Any] = poll(check, timeout=20, step=0.1)
    return found


def test_an_immutable_sqlite_store_delays_the_index_says_so_and_logs_it_once(
    tmp_path: Path, keys: Any, token: str, immutable: list[Path]
) -> None:
    db = tmp_path / "audit.db"
    store = open_store(f"sqlite:///{db}")  # an existing store, then made read-only
    store.close()
    subprocess.run(["chattr", "+i", str(db)], check=True)
    immutable.append(db)
    sidecar = SidecarProcess(tmp_path, _env(keys), token)
    try:
        answers = [sidecar.decide() for _ in range(10)]  # durable in the journal
        assert {(a["allowed"], a["reason"]) for a in answers} == {(True, "allowed")}
        body = _index_behind(sidecar, "readonly")
        assert body["status"] == "ready"
        log = sidecar.log_text()
        # The cause is logged, once for the run of failures (not once per request).
        failed = [line for line in log.splitlines() if "failed: " in line and "readonly" in line]
        assert len(failed) == 1, log
        assert "audit index of" in failed[0]
    finally:
        # SIGKILL: its orderly stop would wait out the closing flush (30 s) on a store that
        # opened read-only and stays so for this process (the durable journal loses nothing).
        sidecar.stop(wait=0)


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
def test_a_postgres_store_that_loses_insert_delays_the_index_until_it_is_back(
    tmp_path: Path, keys: Any, token: str, app_database: tuple[str, str]
) -> None:
    app_url, admin_url = app_database
    role = app_url.split("://", 1)[1].split("@", 1)[0]
    env = _env(keys, GUARD_AUDIT__STORE=app_url, GUARD_AUDIT__READINESS_PROBE_SECONDS="0.2",
               GUARD_AUDIT__INDEX_RETRY_SECONDS="0.1")
    sidecar = SidecarProcess(tmp_path, env, token)
    try:
        assert sidecar.decide()["allowed"] is True
        assert sidecar.wait_ready(True)["audit"]["ok"] is True
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"REVOKE INSERT ON audit_event FROM {role}")
        during = sidecar.decide()
        assert during["allowed"] is True  # durable in the journal; the index waits
        _index_behind(sidecar, "permission denied")
        assert "permission denied for table audit_event" in sidecar.log_text()

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"GRANT INSERT ON audit_event TO {role}")
        poll(lambda: sidecar.get("/readyz").json()["audit"]["detail"]
             == "audit journal writable", timeout=20, step=0.1)
        assert "works again after" in sidecar.log_text()
        with psycopg.connect(admin_url) as conn:
            found = conn.execute("SELECT count(*) FROM audit_event WHERE kind = 'decision'"
                                 ).fetchone()
        assert found == (2,)  # the index caught up
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
    assert (every.failing, every.cause) == (True, "third")  # readiness says why, from here
    every.succeeded()
    assert (every.failing, every.cause) == (False, None)
    every.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "audit store write failed: first"
    assert lines[1].startswith("audit store write still failing: 1 more failure(s)")
    assert lines[2].endswith("latest: third")
    assert lines[3].startswith("audit store write works again after 3 failure(s)")
    assert len(lines) == 4


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
    """Readiness is proven by a real append to the journal, here on a real immutable file."""
    env = _env(keys, GUARD_AUDIT__READINESS_PROBE_SECONDS="0.2")
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
