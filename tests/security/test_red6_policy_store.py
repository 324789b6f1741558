"""Sixth review: a policy row of any size is not read whole by every replica.

Someone who can write the ``guard_policy`` table (around ``guard policy push``) could
store a row up to PostgreSQL's 1 GB per text; every replica listening read it whole
when notified and compiled it, and a valid one went into force (here a real policy
padded with 16 MiB of comment lines). A stored policy is now read only up to
``MAX_POLICY_TEXT`` characters and refused past it, as a row lint refuses: the
running replica keeps its policy and says why, a starting one walks back past it,
and ``guard policy push`` refuses to store one. Real PostgreSQL, ``guard sidecar``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opskit import POLICIES
from sidecarkit import poll

from guard._errors import PolicyError
from guard.policy._load import compile_policy
from guard.policy._pgsource import push_policy, push_policy_dir
from tests.security.test_ops_policy_store import _sidecar, _write_row, store

pytestmark = pytest.mark.postgres
__all__ = ["store"]
BOUND = 16 << 20
"""``guard.policy._pgsource.MAX_POLICY_TEXT``."""


def _padded() -> tuple[str, str]:
    """A policy whose rules pass the bound by comment lines alone: (its version, rules)."""
    rules = (POLICIES / "rules.csv").read_text()
    line = "# " + "x" * 98 + "\n"
    rules += line * (BOUND // len(line) + 2)
    return compile_policy((POLICIES / "model.conf").read_text(), rules, "padded").version, rules


def test_a_row_past_the_bound_is_refused_by_every_replica(
        tmp_path: Path, store: tuple[str, str], keys: Any) -> None:
    url, _ = store
    good = push_policy_dir(url, POLICIES)
    sidecar = _sidecar(tmp_path / "running", url, keys)
    try:
        assert sidecar.get("/healthz").json()["policy_version"] == good.version
        version, rules = _padded()
        big = _write_row(url, version, rules)
        poll(lambda: (sidecar.get("/readyz").json()["last_reload_error"]
                      or sidecar.get("/healthz").json()["policy_version"] != good.version),
             timeout=60)
        assert sidecar.get("/healthz").json()["policy_version"] == good.version, (
            "the replica read the whole row and put it in force")
        assert "longer than" in sidecar.get("/readyz").json()["last_reload_error"]
    finally:
        sidecar.stop()

    starting = _sidecar(tmp_path / "starting", url, keys)
    try:
        assert starting.get("/healthz").json()["policy_version"] == good.version
        skipped = starting.get("/readyz").json()["policy_skipped_at_start"]
        assert [s["id"] for s in skipped] == [big]
    finally:
        starting.stop()


def test_push_refuses_a_policy_past_the_bound(store: tuple[str, str]) -> None:
    url, _ = store
    version, rules = _padded()
    with pytest.raises(PolicyError, match="longer than"):
        push_policy(url, model_text=(POLICIES / "model.conf").read_text(), rules_text=rules,
                    version=version, origin="test")
