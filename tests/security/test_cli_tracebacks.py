"""Every command-line mistake is one line on stderr and exit 2, never a traceback.

A traceback tells a user nothing they can act on and shows internals; the
reproductions are the ones a newcomer's run hit: a span too far back, a port out
of range, output piped into ``head``, a PostgreSQL server that is not there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.security.clikit import clean_guard_env, run  # noqa: F401 (autouse)

REPO = Path(__file__).resolve().parents[2]
GUARD = Path(sys.executable).parent / "guard"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("GUARD_")}
    return {**clean, "GUARD_CONFIG": os.devnull}


MISTAKES = [
    (["audit", "query", "--since", "1000000d"], "bad --since value '1000000d'"),
    (["audit", "query", "--until", "9999-12-31T23:59:59-05:00"], "bad --until value"),
    (["audit", "stats", "--since", "99999999999999999999w", "--store", "sqlite:///a.db"],
     "bad --since value"),
    (["sidecar", "--port", "99999"], "sidecar.port"),
    (["sidecar", "--port", "-1"], "sidecar.port"),
    (["sidecar", "--workers", "0"], "sidecar.workers"),
    (["check", "--caller", "a", "--purpose", "b", "--category", "c", "--policy-dir", "/nope"],
     "policy folder not found: /nope"),
    (["check", "--batch", "/"], "cannot read batch file /"),
    (["policy", "lint", "--policy-dir", "/"], "model.conf not found"),
    (["policy", "test", "--cases", "/"], ""),
    (["policy", "diff", "/", "/"], ""),
    (["audit", "query", "--limit", "0"], "--limit must be at least 1"),
    (["audit", "report", "--subject", "a", "--hmac-key", "/"], "cannot read the subject"),
    (["audit", "report", "--subject", "a", "--format", "pdf"], "--format must be"),
    (["token", "issue", "--caller", "x", "--ttl", "99999999999999999999d"], "--ttl"),
    (["policy", "nope"], "No such command"),
    (["console", "--auditor", "svc:x", "--policy-dir", "/nope"], "policy folder not found"),
]


@pytest.mark.parametrize(("args", "message"), MISTAKES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_mistakes_are_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith("guard: error: "), err
    assert err.count("\n") == 1, err
    assert message in err


@pytest.mark.parametrize(("command", "message"), [
    (["audit", "query"], "cannot read audit store postgresql://"),
    (["audit", "stats"], "cannot read audit store postgresql://"),
    (["audit", "verify"], "cannot read audit store postgresql://"),
    (["policy", "push"], "cannot reach the policy store postgresql://"),
])
def test_postgresql_down_is_one_line(tmp_path: Path, command: list[str], message: str) -> None:
    """psycopg's pool logs each failed attempt; only the guard's own line is shown."""
    url = f"postgresql://guard@127.0.0.1:{closed_port()}/audit"
    done = subprocess.run([str(GUARD), *command, "--store", url], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"guard: error: {message}"), done.stderr


@pytest.mark.parametrize("command", [
    [str(GUARD), "policy", "ropa"],
    [str(GUARD), "policy", "lint", "--format", "json"],
    [sys.executable, "-m", "examples.customers", "--print-only"],
])
def test_a_closed_pipe_is_one_line(tmp_path: Path, command: list[str]) -> None:
    """``... | head``: the reader is gone before the command writes."""
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env(), "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # nobody reads: every write fails with EPIPE
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 2, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert "broken pipe" in errors[0]
    if command[0] == str(GUARD):
        assert err.count("\n") == 1, err  # the example also says it is in development mode


def test_console_with_a_broken_policy_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Refused before serving, not as a traceback from the server's startup."""
    folder = tmp_path / "policy"
    folder.mkdir()
    for name in ("model.conf", "rules.csv"):
        (folder / name).write_text((REPO / "policies" / name).read_text())
    with (folder / "rules.csv").open("a") as rules:
        rules.write("p, svc:crm\n")
    code, _, err = run(monkeypatch, capsys, "console", "--auditor", "svc:x",
                       "--policy-dir", str(folder), "--port", str(closed_port()))
    assert code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"guard: error: {folder / 'rules.csv'}:")


def test_sidecar_on_a_port_in_use_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(monkeypatch, capsys, "sidecar", "--port", str(port))
    assert code == 2
    assert err == f"guard: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
