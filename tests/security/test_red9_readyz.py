"""Ninth review: ``/readyz`` names no file-system path to a caller it does not know.

Readiness is served on the port every client reaches (the sidecar's own path beside
the proxied ones, the example service's public route), and its texts are the guard's
own messages: the policy folder, a key file that went missing, the audit journal's
folder when the disk is short, a store's URL. Anyone could read where the keys, the
journal and the policy lie (what a local attacker, or one with a file-write bug in
another program, wants to know). A request that proves no caller now gets every text
with its paths and URLs withheld; an operator's token reads them whole.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from sidecarkit import ServerThread, free_port, policy_copy, serve_sidecar, sidecar_settings

from examples.customers import create_app as create_example
from guard.config import AuditSettings, PolicySettings, Settings
from middleware._disclose import withheld

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _own_jwks(tmp: Path, keys: Any) -> Path:
    """A copy of the test keys' JWKS file this test may delete."""
    folder = tmp / "jwks"
    folder.mkdir(mode=0o700)
    copy = folder / "jwks.json"
    copy.write_bytes(keys.jwks_file.read_bytes())
    copy.chmod(0o600)
    return copy


def _wait_for_key_error(url: str, bearer: dict[str, str]) -> dict[str, Any]:
    ready: dict[str, Any] = {}
    for _ in range(400):  # the next look at the key files comes within key_refresh_seconds
        ready = httpx.get(url + "/readyz", headers=bearer, timeout=10).json()
        if ready["key_files_error"]:
            break
        time.sleep(0.01)
    return ready


def test_the_sidecars_readyz_names_no_path_to_a_caller_it_does_not_know(
    tmp_path: Path, keys: Any,
) -> None:
    jwks = _own_jwks(tmp_path, keys)
    identity = keys.identity(jwks_file=jwks, key_refresh_seconds=0.05)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = sidecar_settings(tmp_path, policy, identity)
    operator = {"authorization": f"Bearer {keys.mint('hs', sub='svc:ops')}"}
    with serve_sidecar(settings) as server:
        jwks.unlink()  # a key file gone: /readyz says which
        full = _wait_for_key_error(server.url, operator)
        assert str(jwks) in full["key_files_error"]
        assert full["policy_source"] == str(policy)
        anonymous = httpx.get(server.url + "/readyz", timeout=10)
        assert anonymous.status_code == 200
        text = anonymous.text
        for secret in (str(tmp_path), str(policy)):
            assert secret not in text, secret  # before: both paths, whole
        body = anonymous.json()
        assert jwks.name in body["key_files_error"]  # what failed, not where
        assert body["status"] == "ready"


def test_the_example_services_readyz_names_no_path_either(tmp_path: Path, keys: Any) -> None:
    settings = Settings(
        policy=PolicySettings(dir=POLICIES, watch=False),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "keys" / "subject-hmac.key",
                            signing_key=tmp_path / "keys" / "audit-signing.key"),
        identity=keys.identity(jwks_file=_own_jwks(tmp_path, keys), key_refresh_seconds=0.05))
    operator = {"authorization": f"Bearer {keys.mint('hs', sub='svc:ops')}"}
    with ServerThread(create_example(settings), free_port()) as server:
        (tmp_path / "jwks" / "jwks.json").unlink()
        full = _wait_for_key_error(server.url, operator)
        assert str(tmp_path) in full["key_files_error"]
        text = httpx.get(server.url + "/readyz", timeout=10).text
        assert str(tmp_path) not in text


@given(st.lists(st.sampled_from(["/", "a", "-", ".", " ", ":", "'", "~", "x://", "@"]),
                max_size=30).map("".join))
def test_a_withheld_text_holds_no_absolute_path(text: str) -> None:
    out = withheld("see " + text)
    for word in out.replace("'", " ").split():
        assert not word.startswith("/") or "/" not in word[1:] or word.startswith("…")


@given(st.lists(st.sampled_from(["/", "a", "-", ".", " ", ",", "_", "~", "5432"]),
                max_size=30).map("".join))
def test_a_withheld_text_holds_no_relative_path_either(text: str) -> None:
    # settings may name relative paths: the PostgreSQL journal folder by default
    # (.guard/audit-journal/<host>_<port>_<db>), key files as keys/jwks.json
    out = withheld("journal " + text + " full")
    assert "/" not in out.replace("…/", ""), out
    said = withheld("lane .guard/audit-journal/db.internal_5432_guard/lane-0 held; "
                    "key file keys/jwks.json missing")
    assert "db.internal" not in said
    assert said == "lane …/lane-0 held; key file …/jwks.json missing"
