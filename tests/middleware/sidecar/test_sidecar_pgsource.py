"""The PostgreSQL policy source: push a linted policy, load the newest, hear pushes."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest

from bench._pg import free_port
from guard._errors import ConfigError, PolicyError
from guard.policy import PolicyLoadError, load_policy
from guard.policy._pgsource import (
    CHANNEL,
    load_latest,
    load_newest_good,
    load_store_policy,
    push_policy_dir,
    watch_store,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str) -> str:
    """A fresh database per test, so pushes of one test do not leak into another."""
    name = "policy_" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def _copy(policy_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("model.conf", "rules.csv"):
        (dest / name).write_text((policy_dir / name).read_text())
    return dest


def test_push_then_load_gives_the_same_policy(store: str, policy_dir: Path) -> None:
    stored = push_policy_dir(store, policy_dir)
    assert stored.version == load_policy(policy_dir).version
    latest = load_latest(store)
    assert (latest.id, latest.version) == (stored.id, stored.version)
    assert latest.rules_text == (policy_dir / "rules.csv").read_text()
    assert load_store_policy(store).version == stored.version


def test_newest_push_wins(store: str, policy_dir: Path, tmp_path: Path) -> None:
    push_policy_dir(store, policy_dir)
    changed = _copy(policy_dir, tmp_path / "p")
    with (changed / "rules.csv").open("a") as f:
        f.write("\np, svc:analytics, analytics.improvement, usage, write\n")
    second = push_policy_dir(store, changed)
    assert load_store_policy(store).version == second.version != load_policy(policy_dir).version


def test_a_policy_with_lint_errors_is_never_pushed(
    store: str, policy_dir: Path, tmp_path: Path
) -> None:
    good = push_policy_dir(store, policy_dir)
    broken = _copy(policy_dir, tmp_path / "p")
    with (broken / "rules.csv").open("a") as f:
        f.write("\np, svc:crm, relationship.management\n")
    with pytest.raises(PolicyLoadError):
        push_policy_dir(store, broken)
    assert load_latest(store).id == good.id


def test_empty_store_is_a_clear_error(store: str) -> None:
    with pytest.raises(ConfigError, match="holds no policy yet"):
        load_latest(store)


def test_unreachable_store_is_a_clear_error_without_password(policy_dir: Path) -> None:
    port = free_port()
    url = f"postgresql://u:secretpw@127.0.0.1:{port}/db?sslpassword=secretpw"
    with pytest.raises(ConfigError) as info:
        push_policy_dir(url, policy_dir)
    # named as the audit store names its own (guard._pgurl): user, host, port, database
    assert f"cannot reach the policy store postgresql://u@127.0.0.1:{port}/db: " \
        in str(info.value)
    assert "secretpw" not in str(info.value)


def test_watcher_hears_a_push(store: str, policy_dir: Path) -> None:
    async def scenario() -> list[str]:
        heard: list[str] = []
        got = asyncio.Event()

        async def on_push(version: str) -> None:
            heard.append(version)
            got.set()

        ready = asyncio.Event()
        task = asyncio.create_task(watch_store(store, on_push, ready=ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.to_thread(push_policy_dir, store, policy_dir)
            await asyncio.wait_for(got.wait(), 10)
        finally:
            task.cancel()
        return heard

    heard = asyncio.run(scenario())
    assert heard == [load_policy(policy_dir).version]


def test_notification_channel_is_the_documented_one() -> None:
    assert CHANNEL == "guard_policy"


def _store_row(url: str, version: str, rules_text: str, policy_dir: Path) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO guard_policy (version, model_text, rules_text, origin) "
            "VALUES (%s, %s, %s, 'by hand') RETURNING id",
            (version, (policy_dir / "model.conf").read_text(), rules_text),
        ).fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def test_start_walks_back_to_the_newest_policy_that_loads(store: str, policy_dir: Path) -> None:
    good = push_policy_dir(store, policy_dir)
    rules = (policy_dir / "rules.csv").read_text()
    stale = _store_row(store, "sha256:stale", rules, policy_dir)
    broken = _store_row(store, "sha256:broken", rules + "p, svc:crm, x\n", policy_dir)
    start = load_newest_good(store)
    assert (start.id, start.policy.version) == (good.id, good.version)
    assert [(s.id, s.version) for s in start.skipped] == [
        (broken, "sha256:broken"), (stale, "sha256:stale")]
    with pytest.raises(PolicyError):  # a reload still reads the newest, and refuses it
        load_store_policy(store)


def test_start_with_nothing_that_loads_is_a_clear_error(store: str, policy_dir: Path) -> None:
    push_policy_dir(store, policy_dir)
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("UPDATE guard_policy SET version = 'sha256:stale'")
    with pytest.raises(ConfigError, match=r"no policy stored in .* loads \(1 tried\)"):
        load_newest_good(store)


def test_start_on_an_empty_store_is_a_clear_error(store: str) -> None:
    with pytest.raises(ConfigError, match="holds no policy yet"):
        load_newest_good(store)


def test_watcher_reports_a_lost_connection_and_the_reconnection(
    store: str, policy_dir: Path, postgres_url: str
) -> None:
    async def scenario() -> list[tuple[bool, str | None]]:
        states: list[tuple[bool, str | None]] = []
        changed = asyncio.Event()

        async def on_push(_version: str) -> None:
            return None

        def state(on: bool, why: str | None) -> None:
            states.append((on, why))
            changed.set()

        async def until(count: int) -> None:
            while len(states) < count:
                changed.clear()
                await changed.wait()

        task = asyncio.create_task(
            watch_store(store, on_push, listening=state, retry_seconds=0.05))
        try:
            await until(1)
            name = store.rsplit("/", 1)[1]
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'guard-policy-watcher'", (name,))
            await until(3)
        finally:
            task.cancel()
        return states

    states = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert states[0] == (True, None)
    assert states[1][0] is False
    assert states[1][1]
    assert states[2] == (True, None)
