"""Fifth review: a key file is read with a bound, and never blocks the request path.

The JWKS file and the HS256 secret are read again on the request path (on the
event loop) when their look-up interval is due, and the proxy secret and the
audit keys at start. They were read whole with ``read_bytes``: a key file
replaced by a named pipe (or a link to one) stopped the whole server for as long
as nobody wrote into it (every request, ``/healthz`` too), and a link to
``/dev/zero`` or a huge file filled the memory. A key file must now be a regular
file of at most 1 MiB; anything else is a file that cannot be read: the keys last
read from it stay in force and ``/readyz`` says why (at start, the guard refuses
to start with one line).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sidecarkit import policy_copy, serve_sidecar, sidecar_settings
from tokenkit import Keys

from guard._errors import ConfigError
from guard._secrets import KEY_FILE_LIMIT, read_key_file
from guard.audit._keys import load_hmac_key
from middleware._keys import KeyFiles
from middleware.identity import load_proxy_secrets

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@contextlib.contextmanager
def pipe_at(path: Path) -> Iterator[None]:
    """``path`` replaced by a named pipe; on the way out, a reader blocked on it is let go."""
    path.unlink()
    os.mkfifo(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # only when a reader is blocked on it: end its read
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_jwks_file_replaced_by_a_pipe_never_stalls_the_sidecar(
    keys: Keys, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(keys.jwks_file.read_text())
    identity = keys.identity(jwks_file=jwks, hs256_secret_file=None, development=False,
                             key_refresh_seconds=0.05)
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES), identity)
    check = {"x-original-uri": "/echo/x", "x-original-method": "GET",
             "x-purpose": "relationship.management",
             "authorization": f"Bearer {keys.mint('rsa')}"}
    with serve_sidecar(settings) as server:
        assert httpx.get(server.url + "/v1/check", headers=check, timeout=10).status_code == 200
        with pipe_at(jwks):
            for _ in range(20):  # past the look-up interval, more than once
                answer = httpx.get(server.url + "/v1/check", headers=check, timeout=5)
                assert answer.status_code == 200, answer.text  # the last good keys
            health = httpx.get(server.url + "/healthz", timeout=5)
            assert health.status_code == 200
            ready = httpx.get(server.url + "/readyz", timeout=5).json()
            assert "not a regular file" in ready["key_files_error"]


@pytest.mark.parametrize("kind", ["pipe", "device", "oversized"])
def test_a_key_file_that_is_not_a_small_regular_file_is_refused_at_once(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "key"
    if kind == "pipe":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/null")  # as /dev/zero, whose endless bytes filled the memory
    else:
        with path.open("wb") as handle:  # sparse: no disk used
            handle.truncate(KEY_FILE_LIMIT + 1)
    with pytest.raises(OSError, match=r"not a regular file|larger than"):
        read_key_file(path)
    for load in (load_hmac_key, load_proxy_secrets):
        with pytest.raises(ConfigError):
            load(path)
    with pytest.raises(ConfigError):
        KeyFiles(path, None)


def test_a_key_file_that_grows_past_its_bound_keeps_the_last_good_keys(
    keys: Keys, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(keys.jwks_file.read_text())
    clock = [0.0]
    files = KeyFiles(jwks, None, refresh_seconds=1, clock=lambda: clock[0])
    before = files.keys
    with jwks.open("r+b") as handle:
        handle.truncate(KEY_FILE_LIMIT + 1)
    clock[0] = 2.0
    assert files.poll() is None
    assert files.keys == before
    assert files.error is not None
    assert "larger than" in files.error
