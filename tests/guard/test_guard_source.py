"""``Guard.from_settings`` loads ``policy.source``: the policy files, or a PostgreSQL store."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from guard import Request
from guard._errors import ConfigError
from guard._guard import Guard
from guard.audit import EventFilter, open_store, query_events
from guard.config import AuditSettings, PolicySettings, Settings
from guard.policy._pgsource import CHANNEL, TABLE, push_policy_dir

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
ALLOWED = Request("svc:crm", "relationship.management", ("contact",), subject="cust-7")


def _settings(tmp_path: Path, policy: PolicySettings) -> Settings:
    return Settings(
        policy=policy,
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'a.db'}",
                            hmac_key=tmp_path / "k" / "hmac.key",
                            signing_key=tmp_path / "k" / "sign.key"),
    )


def _broken_folder(tmp_path: Path) -> Path:
    """A policy folder whose files do not load (a lint error)."""
    folder = tmp_path / "broken"
    shutil.copytree(SHIPPED, folder)
    rules = folder / "rules.csv"
    rules.write_text(rules.read_text() + "\np, svc:crm, relationship.management\n")
    return folder


def _events(settings: Settings, kind: str) -> list[tuple[str, str | None]]:
    store = open_store(settings.audit.store, create=False)
    try:
        return [(r.event.policy_version, r.event.detail)
                for r in query_events(store, EventFilter(kind=kind))]
    finally:
        store.close()


@pytest.mark.postgres
def test_from_settings_loads_a_postgresql_source_not_the_files(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", "/dev/null")
    stored = push_policy_dir(pg_url, SHIPPED)
    settings = _settings(tmp_path, PolicySettings(source=pg_url, dir=_broken_folder(tmp_path)))
    guard = Guard.from_settings(settings)  # the broken files are never read
    try:
        assert guard.holder.current.version == stored.version
        assert guard.check(ALLOWED).decision.allowed
        # a reload reads the store again: a newer pushed policy comes into force
        newer = tmp_path / "newer"
        shutil.copytree(SHIPPED, newer)
        (newer / "rules.csv").write_text((newer / "rules.csv").read_text() + "\n# pushed\n")
        pushed = push_policy_dir(pg_url, newer)
        assert pushed.version != stored.version
        result = guard.holder.reload()
        assert result.ok
        assert guard.holder.current.version == pushed.version
    finally:
        guard.close()
    assert sorted(v for v, _ in _events(settings, "policy_loaded")) == sorted(
        [stored.version, pushed.version])


@pytest.mark.postgres
def test_from_settings_starts_on_the_newest_stored_policy_that_loads(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", "/dev/null")
    good = push_policy_dir(pg_url, SHIPPED)
    with psycopg.connect(pg_url) as conn:  # a row stored around `guard policy push`
        conn.execute(f"INSERT INTO {TABLE} (version, model_text, rules_text, origin) "
                     "VALUES ('sha256:0000', %s, 'p, broken\n', 'by hand')",
                     ((SHIPPED / "model.conf").read_text(),))
        conn.execute("SELECT pg_notify(%s, 'sha256:0000')", (CHANNEL,))
        conn.commit()
    settings = _settings(tmp_path, PolicySettings(source=pg_url))
    with Guard.from_settings(settings) as guard:
        assert guard.holder.current.version == good.version
    rejected = _events(settings, "policy_rejected")
    assert len(rejected) == 1
    assert rejected[0][0] == good.version
    assert "sha256:0000" in (rejected[0][1] or "")


def test_from_settings_refuses_an_unknown_policy_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", "/dev/null")
    settings = _settings(tmp_path, PolicySettings(source="mysql://db/policy", dir=SHIPPED))
    with pytest.raises(ConfigError, match=r"policy\.source"):
        Guard.from_settings(settings)
    assert not (tmp_path / "a.db").exists()  # refused before the trail was opened
