"""A start refused for its index settings leaves nothing of the audit open.

``audit.index_cpus`` naming a CPU the machine lacks stops the start with one line;
the store's connections and the journal lane are not left open behind it (a
service that reports the error and goes on, or a test, would otherwise hold lane-0
and the store's file until the collector ran).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard._errors import ConfigError
from guard.audit import JournalTrail
from guard.config import AuditSettings
from tests.guard.audit.conftest import Keys


def open_files_under(folder: Path) -> list[str]:
    """The files under ``folder`` this process has open (Linux ``/proc/self/fd``)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
def test_a_cpu_the_machine_lacks_leaves_no_store_or_lane_open(
        keys: Keys, tmp_path: Path) -> None:
    lacking = os.cpu_count() or 1
    settings = AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                             signing_key=keys.signing, hmac_key=tmp_path / "hmac.key",
                             index_cpus=[lacking])
    with pytest.raises(ConfigError, match=r"audit\.index_cpus names CPU") as refused:
        JournalTrail(settings)
    # the refusal (its traceback held, as a service's last line is written) holds nothing
    assert refused.value is not None
    assert open_files_under(tmp_path) == []
    trail = JournalTrail(settings.model_copy(update={"index_cpus": [], "index": "external"}))
    try:
        assert trail.journal.folder.name == "lane-0"  # the refused start's lane is free
    finally:
        trail.close()
