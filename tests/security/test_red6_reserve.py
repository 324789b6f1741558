"""Sixth review: the zeros the journal grows ahead of its records count against the reserve.

The journal grows its newest segment ahead of its records: a batch that passes the
zeros written so far writes 1 MiB more behind itself, so the next batches overwrite
blocks already on disk. The writer counted each batch's records against the free
space before appending it, not those zeros: one small event right after a start
(the zeros are cut when a journal closes) took the audit filesystem 1 MiB further
down, below ``audit.reserve_mb``, and each process's lane did the same (with a few
of them, a reserve of a few megabytes was no reserve). The reserve now keeps room
for the zeros too. A real 8 MB tmpfs holds the journal.
"""

from __future__ import annotations

from pathlib import Path

from opskit import fill_disk, free_bytes

from guard import Guard
from guard.audit._journal import GROW
from guard.config import AuditSettings, PolicySettings, Settings

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
RESERVE_MB = 4
RESERVE = RESERVE_MB * 1_000_000
PAGES = 16 << 10
"""Slack for the filesystem's page rounding of the files the journal writes."""


def settings_for(base: Path, disk: Path) -> Settings:
    return Settings(
        policy=PolicySettings(dir=SHIPPED, watch=False),
        audit=AuditSettings(store=f"sqlite:///{base / 'audit.db'}", journal=disk / "journal",
                            hmac_key=base / "keys" / "subject-hmac.key",
                            signing_key=base / "keys" / "audit-signing.key",
                            writer_id="red6", reserve_mb=RESERVE_MB))


def test_the_zeros_grown_ahead_never_take_the_disk_below_the_reserve(
        tmp_path: Path, small_disk: Path) -> None:
    settings = settings_for(tmp_path, small_disk)
    with Guard.from_settings(settings) as guard:  # the journal exists; closing cuts its zeros
        assert guard.record_policy_event("policy_loaded", "red6")
    fill_disk(small_disk, leave=RESERVE + 300_000)

    with Guard.from_settings(settings) as guard:
        recorded = guard.record_policy_event("policy_loaded", "red6")
        free = free_bytes(small_disk)  # before the close cuts the zeros again
    assert free >= RESERVE - PAGES, (
        f"{free} bytes free after recording={recorded}: the zeros passed the reserve")
    assert not recorded  # 300 kB above the reserve is less than the journal grows ahead


def test_with_room_for_the_zeros_events_are_recorded(tmp_path: Path, small_disk: Path) -> None:
    settings = settings_for(tmp_path, small_disk)
    with Guard.from_settings(settings) as guard:
        assert guard.record_policy_event("policy_loaded", "red6")
    fill_disk(small_disk, leave=RESERVE + GROW + 300_000)

    with Guard.from_settings(settings) as guard:
        assert all(guard.record_policy_event("policy_loaded", "red6") for _ in range(20))
        assert free_bytes(small_disk) >= RESERVE - PAGES
