"""With an OTLP endpoint set, every durable event is exported as a log record."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench._pg import free_port
from tests.guard.audit.conftest import Keys, decision_event, make_trail, record


def test_events_reach_an_otlp_collector(tmp_path: Path, keys: Keys) -> None:
    received: list[ExportLogsServiceRequest] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/logs":
                received.append(ExportLogsServiceRequest.FromString(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/logs"
        trail = make_trail(f"sqlite:///{tmp_path / 'a.db'}", keys, otlp_endpoint=endpoint)
        events = [decision_event(subject_id="alice") for _ in range(3)]
        for event in events:
            record(trail, event)
        trail.close()  # flushes the exporter
    finally:
        server.shutdown()
    bodies = [json.loads(rec.body.string_value)
              for req in received for rl in req.resource_logs
              for sl in rl.scope_logs for rec in sl.log_records]
    assert [b["event_id"] for b in bodies] == [e.event_id for e in events]
    assert all(b["hash"] and b["writer_id"] for b in bodies)
    assert "alice" not in json.dumps(bodies)
