"""A failing OTLP export of audit events is seen by the operator: once, not per event."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bench._pg import free_port
from guard.audit._jtrail import JournalTrail
from guard.audit._keys import load_signing_key
from tests.guard.audit.conftest import Keys, decision_event, keys_at, make_trail, record


class _Collector:
    """A real OTLP/HTTP endpoint on loopback that answers ``status`` (settable)."""

    def __init__(self) -> None:
        self.status = 404
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts += 1
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1/logs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def audit_keys(tmp_path: Path) -> Keys:
    signing = tmp_path / "keys" / "audit-signing.key"
    load_signing_key(signing, create=True)
    return keys_at(signing)


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    yield c
    c.server.shutdown()


def _exported(trail: JournalTrail, collector: _Collector, posts: int) -> None:
    """Flush until the collector has had ``posts`` posts (the writer hands a batch to the
    exporter after it has told the batch's producers, so a flush can come first)."""
    deadline = time.monotonic() + 30
    while True:
        trail._otlp._provider.force_flush()  # type: ignore[union-attr]
        if collector.posts >= posts or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _guard_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "guard.audit" and "OTLP" in r.getMessage()]


def test_a_failing_otlp_export_is_logged_once_not_per_event(
        tmp_path: Path, audit_keys: Keys, collector: _Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="guard.audit")
    trail = make_trail(f"sqlite:///{tmp_path / 'a.db'}", audit_keys,
                       otlp_endpoint=collector.endpoint)
    try:
        for posts in range(1, 4):  # three durable batches, each exported (and refused)
            record(trail, decision_event(subject_id="alice"))
            _exported(trail, collector, posts)
        assert collector.posts >= 3
        lines = _guard_lines(caplog)
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].levelno == logging.ERROR
        assert collector.endpoint in lines[0].getMessage()
        collector.status = 200  # the collector comes back: said once too
        record(trail, decision_event(subject_id="alice"))
        _exported(trail, collector, collector.posts + 1)
        lines = _guard_lines(caplog)
        assert len(lines) == 2
        assert "works again" in lines[1].getMessage()
    finally:
        trail.close()


def test_the_log_line_names_no_credential_of_the_endpoint(
        tmp_path: Path, audit_keys: Keys, collector: _Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="guard.audit")
    endpoint = collector.endpoint.replace("http://", "http://user:s3cret@") + "?token=s3cret"
    trail = make_trail(f"sqlite:///{tmp_path / 'a.db'}", audit_keys, otlp_endpoint=endpoint)
    try:
        record(trail, decision_event(subject_id="alice"))
        _exported(trail, collector, 1)
        (line,) = _guard_lines(caplog)
        assert "s3cret" not in line.getMessage()
        assert collector.endpoint in line.getMessage()
    finally:
        trail.close()


def test_a_working_otlp_export_logs_nothing(
        tmp_path: Path, audit_keys: Keys, collector: _Collector,
        caplog: pytest.LogCaptureFixture) -> None:
    collector.status = 200
    caplog.set_level(logging.INFO, logger="guard.audit")
    trail = make_trail(f"sqlite:///{tmp_path / 'a.db'}", audit_keys,
                       otlp_endpoint=collector.endpoint)
    try:
        record(trail, decision_event(subject_id="alice"))
        _exported(trail, collector, 1)
        assert collector.posts == 1
        assert _guard_lines(caplog) == []
    finally:
        trail.close()
