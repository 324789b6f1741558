"""The sidecar's process is the guard's own: its start-up heap is frozen unless told not to.

``guard sidecar`` (and each of its workers) ends its start-up with ``gc.collect()``
then ``gc.freeze()``, so a full collection no longer walks the modules, the policy and
the app; ``--no-gc-freeze`` (``sidecar.gc_freeze = false``) leaves the collector alone,
and so does an app built by ``create_app`` for someone else's process (these tests).
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecarkit import ServerThread, policy_copy, poll, sidecar_settings, wait_for_port

from bench._pg import free_port
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[3] / "policies"
GUARD = Path(sys.executable).with_name("guard")
FROZEN = re.compile(r"start-up heap frozen: (\d+) objects")


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap unfrozen before and after (the freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _run_sidecar(tmp: Path, *args: str) -> str:
    """Start ``guard sidecar`` with ``args`` until it listens, stop it; its log."""
    policy = policy_copy(tmp / "policy", POLICIES)
    port = free_port()
    log = tmp / "sidecar.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
    env.update({
        "GUARD_CONFIG": os.devnull,
        "GUARD_POLICY__DIR": str(policy),
        "GUARD_POLICY__WATCH": "false",
        "GUARD_AUDIT__STORE": f"sqlite:///{tmp / 'audit.db'}",
        "GUARD_AUDIT__HMAC_KEY": str(tmp / "keys" / "hmac.key"),
        "GUARD_AUDIT__SIGNING_KEY": str(tmp / "keys" / "signing.key"),
        "GUARD_IDENTITY__DEV_KEY": str(tmp / "keys" / "dev.key"),
        "GUARD_SIDECAR__ROUTES": str(policy / "routes.csv"),
    })
    with log.open("wb") as out:
        proc = subprocess.Popen([str(GUARD), "sidecar", "--port", str(port), *args],
                                cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for_port(port, proc=proc, log=log, timeout=30)
        workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        # Each worker's start-up (its lifespan) is over before it serves.
        poll(lambda: log.read_text().count("Application startup complete") >= workers,
             timeout=30, step=0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text(errors="replace")


def test_guard_sidecar_freezes_each_workers_start_up_heap(tmp_path: Path) -> None:
    text = _run_sidecar(tmp_path, "--workers", "2")
    counts = [int(n) for n in FROZEN.findall(text)]
    assert len(counts) == 2, text  # once in each worker (built by app_from_env)
    assert all(n > 10_000 for n in counts), text  # modules, policy, app: not a handful


def test_no_gc_freeze_leaves_the_collector_alone(tmp_path: Path) -> None:
    text = _run_sidecar(tmp_path, "--no-gc-freeze")
    assert "Application startup complete" in text
    assert not FROZEN.search(text), text


def test_the_setting_freezes_the_sidecar_out_of_the_collectors_walks(
    tmp_path: Path, keys: Any, unfrozen: None
) -> None:
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                keys.identity())
    app = create_app(settings, own_process=True)
    with ServerThread(app, free_port()):
        assert gc.get_freeze_count() > 0
        walked = {id(o) for o in gc.get_objects()}  # the permanent generation is not walked
        assert id(app) not in walked
        assert id(app.sidecar) not in walked
        assert id(app.sidecar.holder.current) not in walked


@pytest.mark.parametrize(("gc_freeze", "own_process"), [(False, True), (True, False)])
def test_no_freeze_when_off_or_not_the_sidecars_process(
    tmp_path: Path, keys: Any, unfrozen: None, gc_freeze: bool, own_process: bool
) -> None:
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                keys.identity(), gc_freeze=gc_freeze)
    with ServerThread(create_app(settings, own_process=own_process), free_port()):
        assert gc.get_freeze_count() == 0
