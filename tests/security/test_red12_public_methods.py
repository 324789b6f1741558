"""A public route's request counter keeps no method a client made up (twelfth review).

Requests to a public route are counted, not audited: ``guard.http.public_requests``, an
OpenTelemetry counter with the route and the request's method as attributes. A public
path takes any method, and uvicorn's ``h11`` server takes methods of thousands of
characters: each new one made a new series the metrics SDK keeps (up to its 2,000 a
metric) and exports at every interval. 30 requests with no credentials, each with a
5,000-character method, kept 30 series holding 151,640 characters. A method outside the
standard ones is counted as ``_OTHER`` now, as OpenTelemetry's HTTP conventions say.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from tokenkit import UvicornThread, guard_settings

from middleware import GuardMiddleware, _enforce, _plan, public


def _counted(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    data = reader.get_metrics_data()
    return [dict(point.attributes or {}) for resource in (data.resource_metrics if data else ())
            for scope in resource.scope_metrics for metric in scope.metrics
            if metric.name == "guard.http.public_requests"
            for point in metric.data.data_points]


def test_made_up_methods_on_a_public_route_are_counted_as_other(
        tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counter = provider.get_meter("purpose_guard.middleware").create_counter(
        "guard.http.public_requests")  # as a service's own SDK makes it (no global provider)
    monkeypatch.setattr(_enforce, "_public_counter", counter)
    monkeypatch.setattr(_plan, "_public_counter", counter)
    app = FastAPI()

    @app.get("/healthz")
    @public()
    async def healthz() -> dict[str, str]:
        return {}

    app.add_middleware(GuardMiddleware, settings=guard_settings(tmp_path, keys))
    try:
        with UvicornThread(app, http="h11") as server:
            for number in range(30):
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                    method = b"X" * 5000 + str(number).encode()
                    conn.sendall(method + b" /healthz HTTP/1.1\r\nHost: svc\r\n\r\n")
                    assert conn.recv(100).startswith(b"HTTP/1.1 ")
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
                    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: svc\r\n\r\n")
                    assert conn.recv(100).startswith(b"HTTP/1.1 200")
        counted = _counted(reader)
    finally:
        provider.shutdown()
    methods = {point["http.request.method"] for point in counted}
    # before: 31 methods, 30 of them 5,001 characters or more
    assert methods == {"GET", "_OTHER"}, sorted(len(m) for m in methods)
