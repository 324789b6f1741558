"""Sixth review: the subject HMAC key is the guard's own, and the witness follows no link.

Someone who can write the witness's folder (a volume shared with a log collector)
but not the keys put a symbolic link where the witness file goes: the guard
appended its checkpoints through it, with its own rights, to whatever the link
named. Named at the subject HMAC key, the key file held its hex digits, then JSON
lines; the key loader took any text that was not hex for a raw key, so at the next
start every subject had a new pseudonym: the register's erasures, objections and
restrictions matched nobody, with nothing said. A key file cut short (an even
number of hex digits from 32 on read as a shorter key) or replaced by text was
taken the same way. The witness is now opened with ``O_NOFOLLOW`` (a link is
refused at start), and the key must be the 64 hex digits the guard writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard import Guard
from guard._errors import GuardError
from guard.audit._keys import load_hmac_key, pseudonymise
from guard.config import AuditSettings, PolicySettings, Settings

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
GUARD_CLI = Path(sys.executable).with_name("guard")


def settings_for(base: Path, witness: Path | None = None) -> Settings:
    return Settings(
        policy=PolicySettings(dir=SHIPPED, watch=False),
        audit=AuditSettings(store=f"sqlite:///{base / 'audit' / 'audit.db'}",
                            hmac_key=base / "keys" / "subject-hmac.key",
                            signing_key=base / "keys" / "audit-signing.key",
                            writer_id="red6", witness=witness,
                            checkpoint_every=1))


def started(settings: Settings) -> None:
    """Start the guard on ``settings``, record an event (a checkpoint follows), stop it."""
    with Guard.from_settings(settings) as guard:
        guard.record_policy_event("policy_loaded", "red6")


def test_a_witness_that_is_a_link_never_reaches_the_file_it_names(tmp_path: Path) -> None:
    witness = tmp_path / "witness" / "checkpoints.jsonl"
    settings = settings_for(tmp_path, witness)
    started(settings)  # the keys exist and the witness took checkpoints
    assert witness.read_text().count("\n") >= 1
    key = tmp_path / "keys" / "subject-hmac.key"
    before = key.read_bytes()
    pseudonym = pseudonymise(load_hmac_key(key), "c-0001")
    witness.unlink()
    os.symlink(key, witness)

    with pytest.raises(GuardError, match="link"):
        started(settings)
    assert key.read_bytes() == before, "the guard appended its checkpoints to the key file"
    assert pseudonymise(load_hmac_key(key), "c-0001") == pseudonym


def test_a_witness_file_opens_as_before(tmp_path: Path) -> None:
    witness = tmp_path / "witness" / "checkpoints.jsonl"
    settings = settings_for(tmp_path, witness)
    started(settings)
    lines = witness.read_text().count("\n")
    started(settings)
    assert witness.read_text().count("\n") > lines


GOOD = "0123456789abcdef" * 4


@pytest.mark.parametrize("text", [
    GOOD[:63] + "\n",  # cut by one digit: was read as 63 raw bytes
    GOOD[:40] + "\n",  # cut to 20 bytes' worth: was read as a 20-byte key
    "this file holds text where the key was\n",  # replaced: was a raw key
    GOOD + "\n" + '{"checkpoint_id":"x","seq":1}\n',  # lines appended after the key
    GOOD + GOOD + "\n",  # two keys' worth: was a 64-byte key
])
def test_a_key_file_that_is_not_the_guards_key_is_refused(tmp_path: Path, text: str) -> None:
    settings = settings_for(tmp_path)
    key = tmp_path / "keys" / "subject-hmac.key"
    key.parent.mkdir()
    key.write_text(text)
    with pytest.raises(GuardError, match="64 hex digits"):
        started(settings)
    assert key.read_text() == text

    # The command line says so in one line and exits 2 (the key names a subject there).
    done = subprocess.run(
        [str(GUARD_CLI), "audit", "report", "--subject", "c-0001", "--hmac-key", str(key),
         "--store", f"sqlite:///{tmp_path / 'audit' / 'audit.db'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "64 hex digits" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_key_the_guard_writes_is_read_back(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    started(settings)  # generated on first use
    key = tmp_path / "keys" / "subject-hmac.key"
    assert len(load_hmac_key(key)) == 32
    key.write_text("  " + GOOD.upper() + "\r\n")  # blanks and case as an editor leaves them
    assert load_hmac_key(key) == bytes.fromhex(GOOD)
    started(settings)


NOBODY = 65534


def planted(path: Path, data: bytes, *, owner: int = NOBODY, mode: int = 0o600) -> None:
    """``data`` at ``path`` as another local user would leave it."""
    path.write_bytes(data)
    os.chmod(path, mode)
    os.chown(path, owner, owner)


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_an_audit_key_another_user_planted_is_refused(tmp_path: Path) -> None:
    """A shared working folder: someone made ``keys/`` (the default is ``.guard/``) and put
    their own subject HMAC key in it before the service's first start; or put it in a
    folder anyone may write (``/tmp``), where the configuration names it."""
    settings = settings_for(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    os.chown(keys, NOBODY, NOBODY)
    planted(keys / "subject-hmac.key", (GOOD + "\n").encode())
    with pytest.raises(GuardError, match="folder is owned by uid 65534"):
        started(settings)
    os.chown(keys, 0, 0)
    os.chmod(keys, 0o1777)  # as /tmp: anyone may add a file of theirs
    signing = tmp_path / "signing"
    started(settings_for(signing))  # a signing key of root's own, made elsewhere
    os.rename(signing / "keys" / "audit-signing.key", keys / "audit-signing.key")
    with pytest.raises(GuardError, match="owned by uid 65534 in a folder others may write"):
        started(settings)


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_a_key_another_user_owns_in_a_folder_of_roots_is_read(tmp_path: Path) -> None:
    """Only root or this user could have put it there (a secrets agent's file, mode 0640)."""
    settings = settings_for(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)
    planted(keys / "subject-hmac.key", (GOOD + "\n").encode(), mode=0o640)
    started(settings)
    assert load_hmac_key(keys / "subject-hmac.key") == bytes.fromhex(GOOD)


@pytest.mark.skipif(os.geteuid() != 0, reason="making files of another user needs root")
def test_no_key_is_made_in_a_folder_another_user_made(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    os.chmod(keys, 0o1777)
    with pytest.raises(GuardError, match="writable by others"):
        started(settings)
    assert list(keys.iterdir()) == []
    os.chmod(keys, 0o700)
    os.chown(keys, NOBODY, NOBODY)
    with pytest.raises(GuardError, match="owned by uid 65534"):
        started(settings)
    assert list(keys.iterdir()) == []


def test_a_key_others_may_write_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    started(settings)
    for name in ("subject-hmac.key", "audit-signing.key"):
        key = tmp_path / "keys" / name
        os.chmod(key, 0o620)
        with pytest.raises(GuardError, match="writable by others"):
            started(settings)
        os.chmod(key, 0o600)
    started(settings)  # the guard's own keys, as it made them
