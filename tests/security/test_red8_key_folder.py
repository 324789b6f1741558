"""A key in a folder others may write without the sticky bit proves no caller.

In a folder its group (or everyone) may write and that has no sticky bit, any user who
may write it can rename any entry over another, whoever owns them: a member of a shared
configuration folder's group renames a file of root's whose text they can read (a
README, the audit public key) over root's HS256 secret, and every check on the file
itself passes (root's, mode 0644, in root's folder). The secret is then text they know.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from tokenkit import AUDIENCE, ISSUER, claims

from guard._errors import ConfigError
from guard.config import IdentitySettings
from middleware.identity import Authenticator, IdentityError

NOBODY = 65534
"""Another local user (``nobody``)."""
SECRET = b"s" * 48
KNOWN = b"# Keys for the guard. Ask the platform team before changing them.\n"


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root")


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder of root's that ``nobody``'s group may write, holding root's HS256 secret
    and a file of root's that everyone may read."""
    made = Path(tempfile.mkdtemp(prefix="red8-keys-", dir="/tmp"))
    made.chmod(0o755)
    try:
        folder = made / "keys"
        folder.mkdir()
        (folder / "hs256").write_bytes(SECRET)
        (folder / "hs256").chmod(0o600)
        (folder / "README").write_bytes(KNOWN)
        (folder / "README").chmod(0o644)
        os.chown(folder, 0, NOBODY)
        yield folder
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _identity(folder: Path, **more: Any) -> IdentitySettings:
    return IdentitySettings(hs256_secret_file=folder / "hs256", audience=AUDIENCE,
                            issuer=ISSUER, development=False, **more)


def _as_nobody(code: str) -> None:
    """Run ``code`` in a Python process as the user ``nobody`` (the other local user)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    subprocess.run([python, "-I", "-c", code], user=NOBODY, group=NOBODY, check=True,
                   capture_output=True, timeout=60)


def test_a_file_of_roots_renamed_over_the_secret_mints_no_caller(base: Path) -> None:
    base.chmod(0o755)
    auth = Authenticator.from_settings(_identity(base, key_refresh_seconds=0.001),
                                       announce=False)
    auth.verify(jwt.encode(claims(sub="svc:crm"), SECRET.decode(), "HS256"))
    base.chmod(0o775)  # a shared configuration folder: its group may write, no sticky bit
    _as_nobody(f"import os; os.rename({str(base / 'README')!r}, {str(base / 'hs256')!r})")
    forged = jwt.encode(claims(sub="svc:crm"), KNOWN.strip().decode(), "HS256")
    time.sleep(0.01)  # past the look-up interval: the next use reads the file again
    with pytest.raises(IdentityError):
        auth.verify(forged)
    assert "sticky" in (auth.key_files_error or "")


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_a_key_in_a_folder_others_may_write_without_the_sticky_bit_is_refused_at_start(
        base: Path, mode: int) -> None:
    base.chmod(mode)
    with pytest.raises(ConfigError, match="sticky bit"):
        Authenticator.from_settings(_identity(base), announce=False)


@pytest.mark.parametrize("mode", [0o755, 0o1775, 0o1777])
def test_a_key_in_a_folder_only_root_may_write_or_with_the_sticky_bit_is_read(
        base: Path, mode: int) -> None:
    base.chmod(mode)
    auth = Authenticator.from_settings(_identity(base), announce=False)
    auth.verify(jwt.encode(claims(sub="svc:crm"), SECRET.decode(), "HS256"))
    if mode & 0o1000:  # and the rename is refused by the kernel
        with pytest.raises(subprocess.CalledProcessError):
            _as_nobody(f"import os; os.rename({str(base / 'README')!r}, "
                       f"{str(base / 'hs256')!r})")
