"""Thirteenth review: ``guard console``'s start line names the audit store without its password.

``guard console`` prints where it serves and which store it reads on stderr, the
service's log; the store URL was printed as given, so a PostgreSQL store's password
(``postgresql://auditor:SECRET@db/audit``) went into the log of every start, where the
guard's other messages show ``postgresql://user@host:port/db``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

GUARD = Path(sys.executable).parent / "guard"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_start_line_holds_no_store_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_")}
    store = f"postgresql://auditor:s3cret-pw@127.0.0.1:{_closed_port()}/audit"
    served = subprocess.Popen(
        [str(GUARD), "console", "--store", store, "--auditor", "svc:support",
         "--port", str(_closed_port())],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**env, "GUARD_CONFIG": os.devnull})
    try:
        assert served.stderr is not None
        lines = []
        for line in served.stderr:  # up to the start line, printed before the server starts
            lines.append(line)
            if line.startswith("guard console on "):
                break
    finally:
        served.kill()
        served.wait()
    start = lines[-1]
    assert start.startswith("guard console on "), lines
    # Before: "(store postgresql://auditor:s3cret-pw@127.0.0.1:PORT/audit; ...)".
    assert "s3cret-pw" not in start
    assert "(store postgresql://auditor@127.0.0.1:" in start
