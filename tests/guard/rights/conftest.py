"""Register fixtures: ``store_url`` and ``pg_url`` come from the shared ``tests/conftest.py``;
``store`` is the SQLite audit store and keys the ``guard`` CLI is pointed at."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> str:
    monkeypatch.chdir(policy_dir.parent)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("GUARD_AUDIT__STORE", url)
    monkeypatch.setenv("GUARD_AUDIT__HMAC_KEY", str(tmp_path / "hmac.key"))
    monkeypatch.setenv("GUARD_AUDIT__SIGNING_KEY", str(tmp_path / "signing.key"))
    return url
