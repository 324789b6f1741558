"""Fifth review: a link planted in the audit journal never reaches a file outside it.

Someone who can write the audit folder (a backup operator, a shared group, the
DBA of the store's volume) but not the keys could put a symbolic link in a journal
lane where the guard expects one of its own files. The guard opened them following
the link, with its own rights: ``END`` (truncated to 16 bytes and the journal's end
written in) made the subject HMAC key a known 16-byte value at the next start,
so the attacker could compute every pseudonym and re-hash keyed chains; ``ID``
(read as the lane's id and stored in the index's offset table) copied the key's
text, or the signing key's PEM, into the store; the newest segment was truncated
and appended to. Each is now refused (the trail does not open: fail closed) and the
file the link names is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard import Guard
from guard._errors import GuardError
from guard.audit._journal import SUFFIX, segment_name
from guard.config import AuditSettings, PolicySettings, Settings

SHIPPED = Path(__file__).resolve().parents[2] / "policies"


def settings_for(base: Path) -> Settings:
    return Settings(
        policy=PolicySettings(dir=SHIPPED, watch=False),
        audit=AuditSettings(store=f"sqlite:///{base / 'audit' / 'audit.db'}",
                            hmac_key=base / "keys" / "subject-hmac.key",
                            signing_key=base / "keys" / "audit-signing.key",
                            writer_id="red5"))


def started(settings: Settings) -> None:
    """Start the guard on ``settings``, record one decision's worth of audit, stop it."""
    with Guard.from_settings(settings) as guard:
        guard.record_policy_event("policy_loaded", "red5")


@pytest.mark.parametrize("name", ["END", "ID", "LOCK", "segment"])
def test_a_link_in_a_lane_never_reaches_the_file_it_names(tmp_path: Path, name: str) -> None:
    settings = settings_for(tmp_path)
    started(settings)  # the keys and lane-0 exist, as on a host that ran the service
    key = tmp_path / "keys" / "subject-hmac.key"
    before = key.read_bytes()
    lane = tmp_path / "audit" / "audit.db.journal" / "lane-0"
    assert (lane / "ID").is_file()
    if name == "segment":
        target = sorted(lane.glob(f"*{SUFFIX}"))[-1]
        (lane / "END").unlink()  # nothing published: the newest segment is believed as it is
    else:
        target = lane / name
    target.unlink()
    os.symlink(key, target)

    with pytest.raises(GuardError, match="link"):
        started(settings)
    assert key.read_bytes() == before, f"the guard wrote through {name} into the key file"


def test_a_new_lane_holding_a_link_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    key = tmp_path / "keys" / "subject-hmac.key"
    key.parent.mkdir()
    key.write_text("ab" * 32 + "\n")
    before = key.read_bytes()
    lane = tmp_path / "audit" / "audit.db.journal" / "lane-0"
    lane.mkdir(parents=True)  # prepared before the service's first start
    os.symlink(key, lane / "ID")
    os.symlink(key, lane / segment_name(0))

    with pytest.raises(GuardError, match="link"):
        started(settings)
    assert key.read_bytes() == before


def test_a_lane_that_is_a_link_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    started(settings)
    elsewhere = tmp_path / "keys"  # the lane's files would be made among the keys
    lane = tmp_path / "audit" / "audit.db.journal" / "lane-0"
    lane.rename(tmp_path / "moved")
    os.symlink(elsewhere, lane)

    with pytest.raises(GuardError, match="link"):
        started(settings)
    assert sorted(p.name for p in elsewhere.iterdir()) == [
        "audit-signing.key", "audit-signing.key.pub", "subject-hmac.key"]


def test_a_journal_without_links_opens_as_before(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    started(settings)
    started(settings)  # the same lane, opened again
    lane = tmp_path / "audit" / "audit.db.journal" / "lane-0"
    assert (lane / "ID").is_file()
    assert not (lane / "ID").is_symlink()
