"""Fourth review: the SQLite index is as private as the journal it indexes.

The journal's folders and segments are made for the service's user alone (0700,
0600), and so are the keys. The SQLite audit store holds the same events, the
subject register (with its references) and the checkpoints: a local user must not
read it either, whatever the service's umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard import Guard
from guard.audit import wait_indexed
from guard.config import AuditSettings, PolicySettings, Settings
from guard.rights import Change, EntryKind

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # a common default: files readable by every local user
    try:
        yield
    finally:
        os.umask(old)


def test_the_sqlite_store_is_readable_by_its_owner_alone(tmp_path: Path, umask_022: None) -> None:
    settings = Settings(
        policy=PolicySettings(dir=SHIPPED, watch=False),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "keys" / "subject-hmac.key",
                            signing_key=tmp_path / "keys" / "audit-signing.key",
                            writer_id="red4"))
    with Guard.from_settings(settings) as guard:
        guard.record_subject_change(Change("c-0042", EntryKind.OBJECTION, "marketing",
                                           ref="ticket-17", who="test:dpo"))
        wait_indexed(settings.audit)
        files = sorted(tmp_path.glob("audit.db*"))
        assert tmp_path / "audit.db" in files
        for path in files:
            if path.is_file():
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, f"{path.name} is {mode:o}: other local users read it"
