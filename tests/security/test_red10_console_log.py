"""Tenth review: a client with no credentials cannot write the console's log line by line.

The console's sign-in pages serve everyone (on their own, or mounted in the sidecar's
port). Each refused sign-in wrote an ``info`` line, and each visit to ``/signin/done``
without the cookie a ``warning``: a client sending them as fast as the console answered
filled the disk the log is on (the ninth review bounded the guard's own such lines for
the same reason). Each kind is now written at most once a minute, with a count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, free_port, policy_copy, sidecar_settings

from guard.config import ConsoleSettings
from middleware.console import _app as console_app
from middleware.console import create_console
from middleware.console._quiet import Quiet
from middleware.sidecar import create_app
from middleware.sidecar._server import SidecarHttpProtocol

POLICIES = Path(__file__).resolve().parents[2] / "policies"
TRIES = 200


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[Lines]:
    logger = logging.getLogger("guard.console")
    for name in ("_refused_signin", "_cookie_not_kept"):  # a fresh window for each test
        monkeypatch.setattr(console_app, name, Quiet(logger), raising=False)
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("mounted", [False, True], ids=["guard console", "sidecar"])
def test_refused_sign_ins_write_a_bounded_number_of_log_lines(
        tmp_path: Path, keys: Any, lines: Lines, mounted: bool) -> None:
    settings_ = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES),
                                 keys.identity())
    settings_ = settings_.model_copy(update={"console": ConsoleSettings(
        auditors=["svc:support"], mount_in_sidecar=mounted)})
    app = create_app(settings_) if mounted else create_console(settings_)
    served = ServerThread(app, free_port(), http=SidecarHttpProtocol if mounted else "h11")
    served.server.config.proxy_headers = False
    prefix = "/console" if mounted else ""
    with served as server, httpx.Client(base_url=server.url + prefix, timeout=10) as client:
        for n in range(TRIES):
            refused = client.post("/signin", data={"token": f"not-a-token-{n}"})
            assert refused.status_code == 401
            back = client.get("/signin/done")
            assert back.status_code == 400
            assert "did not keep the sign-in cookie" in back.text
    refusals = [line for line in lines.lines if "sign-in refused" in line]
    returns = [line for line in lines.lines if "came back without its cookie" in line]
    assert 1 <= len(refusals) <= 2, refusals[:5]
    assert 1 <= len(returns) <= 2, returns[:5]


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.floats(0, 150, allow_nan=False), min_size=1, max_size=60))
def test_every_line_is_written_or_counted_once(steps: list[float]) -> None:
    now = [0.0]
    written: list[str] = []

    class Into(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    logger = logging.getLogger("test.red10.quiet")
    logger.handlers[:] = [Into()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    quiet = Quiet(logger, 60.0, clock=lambda: now[0])
    last_written = float("-inf")
    for step in steps:
        now[0] += step
        before = len(written)
        quiet.log(logging.INFO, "refused: %s", "x")
        if len(written) > before:
            assert now[0] >= last_written + 60.0  # at most one line a window
            last_written = now[0]
    counted = sum(int(m.group(1)) for line in written
                  if (m := re.search(r"and (\d+) more", line)) is not None)
    assert len(written) + counted + quiet._more == len(steps)
