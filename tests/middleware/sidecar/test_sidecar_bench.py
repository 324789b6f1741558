"""``bench/sidecar.py --in-process``: the check path straight into the app, every check allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "sidecar.py"


def test_in_process_checks_run_and_report_the_loops_cost(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--in-process", "40", "--audit-dir",
                           str(tmp_path)], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "40 checks in process" in done.stdout
    assert "event loop CPU" in done.stdout
