"""Where the index runs: the commands of docs/audit.md's "Where to run the index", run as written.

A real ``guard sidecar`` under ``taskset -c 0`` and a real ``guard audit index``
under ``taskset -c 1`` (or the service's child pinned by ``audit.index_cpus``):
every thread of each process is on its CPU (``/proc``), a decision made through
the sidecar gets into the store, and a CPU the machine lacks stops the start in
one line. No timing is asserted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from bench._pg import free_port
from guard._errors import ConfigError
from guard.audit import JournalTrail, open_store, wait_indexed
from guard.cli._token import issue_token
from guard.config import AuditSettings, IdentitySettings, load_settings
from tests.guard.audit.conftest import Keys

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "audit.md"
BIN = Path(sys.executable).parent
HEADERS = {"X-Purpose": "relationship.management", "X-Original-URI": "/customers/c-0001",
           "X-Original-Method": "GET"}

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2
    or shutil.which("taskset") is None, reason="needs Linux, 2 CPUs and taskset (util-linux)")


def doc_commands() -> list[str]:
    """The lines of the first ``sh`` block of the section "Where to run the index"."""
    section = DOC.read_text().split("### Where to run the index", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()
            if line.strip()]


def cpus_of(pid: int) -> set[str]:
    """The ``Cpus_allowed_list`` of every thread of process ``pid``."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        allowed = re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.M)
        assert allowed is not None
        found.add(allowed.group(1))
    return found


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def config(tmp_path: Path, audit: str) -> tuple[Path, int]:
    """A ``guard.toml`` for the sidecar and the index (its ``[audit]`` lines ``audit``)."""
    port = free_port()
    path = tmp_path / "guard.toml"
    path.write_text(f"""
[policy]
dir = "{REPO / 'policies'}"
watch = false
[audit]
store = "sqlite:///{tmp_path / 'audit.db'}"
hmac_key = "{tmp_path / 'hmac.key'}"
signing_key = "{tmp_path / 'signing.key'}"
{audit}
[identity]
dev_key = "{tmp_path / 'dev.key'}"
[sidecar]
routes = "{REPO / 'policies' / 'routes.csv'}"
port = {port}
log_level = "warning"
""")
    return path, port


@contextmanager
def started(command: str, cwd: Path, conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` as a person types it (``exec``: the process is the command's own)."""
    env = {**os.environ, "GUARD_CONFIG": str(conf),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=(cwd / "stderr.log").open("ab"))
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def checked(port: int, proc: subprocess.Popen[bytes], token: str, log: Path) -> str:
    """A decision made through the sidecar at ``port`` once it serves; its id."""
    url = f"http://127.0.0.1:{port}/v1/check"
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.get(url, headers={"Authorization": f"Bearer {token}", **HEADERS},
                               timeout=30)
            break
        except httpx.TransportError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sidecar did not start"
            time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-guard-decision-id"]


def settings_of(conf: Path, monkeypatch: pytest.MonkeyPatch) -> AuditSettings:
    """The ``[audit]`` settings ``conf`` gives, read as the commands read them."""
    monkeypatch.setenv("GUARD_CONFIG", str(conf))
    return load_settings().audit


def assert_indexed(settings: AuditSettings, decision_id: str) -> None:
    wait_indexed(settings)
    store = open_store(settings.store, create=False)
    try:
        assert store.rows("SELECT count(*) FROM audit_event WHERE event_id = ?",
                          (decision_id,)) == [(1,)]
    finally:
        store.close()


def test_the_doc_commands_pin_the_service_and_guard_audit_index_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, index = doc_commands()
    assert service == "taskset -c 0 guard sidecar"
    assert index == "taskset -c 1 guard audit index"
    conf, port = config(tmp_path, 'index = "external"')
    token = issue_token(IdentitySettings(dev_key=tmp_path / "dev.key"), "svc:crm")
    with started(service, tmp_path, conf) as sidecar, started(index, tmp_path, conf) as indexer:
        decision = checked(port, sidecar, token, tmp_path / "stderr.log")
        # by `guard audit index`: the service has no child
        assert_indexed(settings_of(conf, monkeypatch), decision)
        assert children(sidecar.pid) == []
        assert cpus_of(sidecar.pid) == {"0"}
        assert cpus_of(indexer.pid) == {"1"}
    assert indexer.returncode == 0


def test_audit_index_cpus_pins_the_services_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = doc_commands()[0]
    conf, port = config(tmp_path, "index_cpus = [1]")
    token = issue_token(IdentitySettings(dev_key=tmp_path / "dev.key"), "svc:crm")
    with started(service, tmp_path, conf) as sidecar:
        decision = checked(port, sidecar, token, tmp_path / "stderr.log")
        assert_indexed(settings_of(conf, monkeypatch), decision)
        (child,) = children(sidecar.pid)
        assert cpus_of(sidecar.pid) == {"0"}
        assert cpus_of(child) == {"1"}  # every thread, the indexers' included


def test_a_cpu_the_machine_lacks_stops_the_start_in_one_line(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lacking = os.cpu_count() or 1
    settings = AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                             signing_key=keys.signing, hmac_key=tmp_path / "hmac.key",
                             index_cpus=[0, lacking])
    with pytest.raises(ConfigError) as refused:
        JournalTrail(settings)
    assert str(refused.value) == (f"audit.index_cpus names CPU {lacking}, which this machine "
                                  f"lacks (CPUs 0-{lacking - 1})")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        AuditSettings(index_cpus=[-1])
    conf = tmp_path / "guard.toml"
    conf.write_text("[audit]\nindex_cpus = [1]\n")
    assert settings_of(conf, monkeypatch).index_cpus == [1]


def test_a_cpu_set_the_system_refuses_leaves_the_child_indexing_where_it_is() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import logging, os\n"
         "from guard.audit._follow import _pin\n"
         "logging.basicConfig()\n"
         "before = os.sched_getaffinity(0)\n"
         "_pin('4096')\n"
         "assert os.sched_getaffinity(0) == before"],
        capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "audit index process: cannot run on CPUs 4096 (audit.index_cpus)" in done.stderr
    assert "it runs on the service's" in done.stderr
