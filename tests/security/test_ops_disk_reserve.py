"""Callers cannot fill the audit disk: below a free-space reserve the guard stops, says so, resumes.

The audit journal (beside its SQLite store) lives on a real 8 MB tmpfs mounted
for the test; a filler file takes the free space below the 4 MB reserve, as a
flood of requests would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opskit import SidecarProcess, fill_disk, free_bytes
from sidecarkit import poll

RESERVE_MB = 4


def test_below_the_reserve_requests_are_refused_readyz_says_so_and_it_resumes(
    tmp_path: Path, small_disk: Path, keys: Any
) -> None:
    env = {
        "GUARD_IDENTITY__HS256_SECRET_FILE": str(keys.hs_file),
        "GUARD_AUDIT__STORE": f"sqlite:///{small_disk / 'audit.db'}",
        "GUARD_AUDIT__RESERVE_MB": str(RESERVE_MB),
    }
    sidecar = SidecarProcess(tmp_path / "sidecar", env, keys.mint("hs", sub="svc:crm"))
    try:
        assert sidecar.decide()["allowed"] is True
        assert sidecar.wait_ready(True)["audit"]["ok"] is True

        filler = fill_disk(small_disk, leave=2_000_000)
        # Free space is read at most every 250 ms, not per event: refused from then on.
        poll(lambda: sidecar.decide()["reason"] == "audit_unavailable", timeout=30, step=0.05)
        denied = [sidecar.decide() for _ in range(20)]
        assert {(d["allowed"], d["reason"]) for d in denied} == {(False, "audit_unavailable")}
        body = sidecar.wait_ready(False)
        assert "below the reserve of 4.0 MB" in body["audit"]["detail"]
        assert free_bytes(small_disk) > 1_000_000  # refused before the filesystem is full
        log = sidecar.log_text()
        # Said once, when the state changed, not once per refused request.
        assert log.count("refusing audit writes") == 1, log

        filler.unlink()
        poll(lambda: sidecar.decide()["allowed"], timeout=10, step=0.1)
        assert sidecar.wait_ready(True)["audit"]["ok"] is True
        log = sidecar.log_text()
        assert log.count("has room again") == 1, log
        assert log.count("refusing audit writes") == 1, log
    finally:
        sidecar.stop()
