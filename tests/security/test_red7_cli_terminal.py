"""Seventh review: what a client wrote never drives the auditor's terminal.

A refused request is recorded with the purpose it declared (cut to 200 characters),
token or not. uvicorn's ``h11`` server and nginx pass escape and other control bytes in a
header value (``httptools`` passes the C1 controls, 0x80-0x9F, read as latin-1), and the
auditor's commands printed the value raw: ``guard audit query`` and ``guard audit stats``
sent ``ESC [1A ESC [2K`` (move up, erase the line) and the like to the terminal, so one
request with no credentials could erase earlier rows from what the auditor saw, rewrite
them, hide text or plant a link. Every value they print now shows its control characters
as escapes (``\\x1b``), and so does ``guard audit report``'s Markdown.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenkit import Keys, UvicornThread, guard_settings

from examples.customers import create_app
from guard.audit import wait_indexed
from guard.cli._plain import visible

GUARD = [sys.executable, "-c", "from guard.cli import main; main()"]
# Move up a line and erase it, four times; hide what follows (SGR 8); a link by OSC 8.
ERASE = b"\x1b[1A\x1b[2K" * 4 + b"\x1b[8m"
LINK = b"\x1b]8;;https://evil.example/\x1b\\open\x1b]8;;\x1b\\"
C1 = b"\x9b2J"  # the one-byte CSI: clear the screen, where a terminal reads C1 controls
BIDI = {chr(c) for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
CONTROL = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} - {"\n"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """The example service under uvicorn's h11 after three refused requests whose purposes
    hold control bytes; the folder to run the auditor's commands in."""
    base = tmp_path_factory.mktemp("red7term")
    settings = guard_settings(base, keys)
    with UvicornThread(create_app(settings), http="h11") as server:
        for purpose in (ERASE, LINK, C1):
            head = (b"GET /customers/c-0001 HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n"
                    b"X-Purpose: " + purpose + b"\r\n\r\n")
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                sock.sendall(head)
                answer = sock.recv(65536)
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), answer
    wait_indexed(settings.audit)
    (base / "guard.toml").write_text(
        f'[audit]\nstore = "sqlite:///{base / "audit.db"}"\n'
        f'hmac_key = "{base / "subject-hmac.key"}"\n'
        f'signing_key = "{base / "audit-signing.key"}"\n')
    return base


def _run(base: Path, *args: str) -> str:
    done = subprocess.run([*GUARD, *args], capture_output=True, cwd=base, timeout=120,
                          env={"GUARD_CONFIG": str(base / "guard.toml"), "PATH": "/usr/bin:/bin",
                               "COLUMNS": "400"}, check=False)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    return done.stdout.decode("utf-8")


@pytest.mark.parametrize("command", [("audit", "query", "--limit", "20"),
                                     ("audit", "query", "--csv"),
                                     ("audit", "stats"),
                                     ("audit", "report", "--subject", "c-0001")])
def test_a_purpose_a_client_wrote_never_reaches_the_terminal_as_controls(
    store: Path, command: tuple[str, ...]
) -> None:
    base = store
    shown = _run(base, *command).replace("\r\n", "\n")  # CSV ends its rows so
    assert not CONTROL & set(shown), sorted(CONTROL & set(shown))
    if command[1] != "report":  # the report lists accesses; these list every decision
        assert "\\x1b[1A" in shown  # the value is there, visible
        assert "\\x9b2J" in shown


@given(st.text())
def test_visible_leaves_no_control_and_keeps_the_rest(text: str) -> None:
    shown = visible(text)
    assert not (CONTROL | {"\n"}) & set(shown)
    if not (CONTROL | {"\n"}) & set(text) and "\\" not in text and not BIDI & set(text):
        assert shown == text
    document = visible(text, lines=True)
    assert not CONTROL & set(document)
    assert document.count("\n") == text.count("\n")
    assert document.count("\\") >= text.count("\\")
