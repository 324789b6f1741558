"""``guard sidecar`` and ``guard policy push`` refuse bad input in one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GUARD = Path(sys.executable).with_name("guard")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["sidecar", "--workers", "0"], {}, "invalid settings: sidecar.workers"),
        (["sidecar", "--upstream", "notaurl"], {}, "invalid settings: sidecar.upstream"),
        (["sidecar"], {"GUARD_SIDECAR__PORT": "abc"}, "invalid settings: sidecar.port"),
        (["sidecar", "--policy-source", "bogus"], {}, "policy.source must be 'files'"),
        (["sidecar", "--routes", "/nonexistent/routes.csv"], {}, "routes file not found"),
        (["policy", "push", "--store", "http://db"], {}, "--store must be a postgresql:// URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [str(GUARD), *args],
        cwd=tmp_path,
        env={**os.environ, "GUARD_CONFIG": os.devnull, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("guard: error: ")
    assert message in lines[0]
