"""Thirteenth review: an auditor's argument that is not UTF-8 text is one line, not a traceback.

A command-line argument holding bytes that are not UTF-8 (a subject id pasted from a file
in Latin-1, say) reaches Python as text with lone surrogates; ``guard audit query
--caller/--purpose/--category/--subject`` and ``guard audit report --subject`` passed it
to SQLite or to the subject's HMAC and stopped with ``UnicodeEncodeError``'s traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.audit import open_store

GUARD = Path(sys.executable).parent / "guard"


@pytest.mark.parametrize("args", [
    ["query", "--caller"], ["query", "--purpose"], ["query", "--category"],
    ["query", "--subject"], ["report", "--subject"],
])
def test_an_argument_that_is_no_utf8_text_is_one_line(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    open_store(url).close()
    key = tmp_path / "hmac.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_")}
    done = subprocess.run(
        [str(GUARD), "audit", *args, b"caf\xe9", "--store", url, "--hmac-key", str(key)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={**env, "GUARD_CONFIG": os.devnull})
    # Before: exit 1 and UnicodeEncodeError's traceback.
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"guard: error: {args[1]} is not UTF-8 text"
