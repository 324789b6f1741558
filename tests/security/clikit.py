"""The command line run in-process, in an empty folder with no ``GUARD_*`` variable from outside.

A test module that imports :func:`clean_guard_env` runs each of its tests that way.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from guard.cli import main


@pytest.fixture(autouse=True)
def clean_guard_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GUARD_* variable from outside; work in an empty folder."""
    for name in list(os.environ):
        if name.upper().startswith("GUARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    """``guard ARGS`` in-process as its console script runs it (reading ``stdin`` when
    given): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["guard", *args])
    if stdin is not None:
        raw = stdin.encode() if isinstance(stdin, str) else stdin
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code: object = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert isinstance(code, int), (code, err)
    return code, out, err


def cli_store(base: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the command line at an SQLite audit store, keys and journal under ``base``
    (no configuration file); the store's path."""
    path = base / "audit.db"
    monkeypatch.setenv("GUARD_CONFIG", "/dev/null")
    monkeypatch.setenv("GUARD_AUDIT__STORE", f"sqlite:///{path}")
    monkeypatch.setenv("GUARD_AUDIT__HMAC_KEY", str(base / "hmac.key"))
    monkeypatch.setenv("GUARD_AUDIT__SIGNING_KEY", str(base / "signing.key"))
    monkeypatch.setenv("GUARD_AUDIT__JOURNAL", str(base / "journal"))
    return path
