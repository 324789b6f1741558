"""OpenTelemetry: a span per decision, and optional OTLP export of audit events as logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, ProxyTracer, SpanContext

from guard._types import Decision
from guard.audit._event import AuditEvent
from guard.audit._health import FailureLog

tracer = trace.get_tracer("purpose-guard")


def decision_attributes(decision: Decision) -> dict[str, Any]:
    """Span attributes describing a decision (no subject id, raw or pseudonymised)."""
    return {
        "guard.caller": decision.caller,
        "guard.purpose": decision.purpose,
        "guard.categories": list(decision.categories),
        "guard.action": decision.action.value,
        "guard.allowed": decision.allowed,
        "guard.reason": decision.reason.value,
        "guard.rule": list(decision.rule),
        "guard.lawful_basis": list(decision.lawful_basis),
        "guard.policy_version": decision.policy_version,
    }


def span_ids(ctx: SpanContext) -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` of a span context as an audit event stores them; Nones if invalid."""
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def makes_no_span(tracer: trace.Tracer) -> bool:
    """True when ``tracer.start_span`` would make no span of its own.

    That is the API's no-op tracer, or the global proxy tracer while no tracer
    provider is set (the default without the OpenTelemetry SDK): its "span" is the
    current span, or a non-recording one with the current span's ids, so a caller
    can read the current span once instead of starting one and reading it again.
    Set once, the global provider stays (the API refuses to replace it).
    """
    kind = type(tracer)
    if kind is NoOpTracer:
        return True
    # ProxyTracer's own test for its delegate (opentelemetry-api, pinned): no real
    # tracer made yet and no global provider to make one from.
    return (kind is ProxyTracer and tracer._real_tracer is None  # type: ignore[attr-defined]
            and trace._TRACER_PROVIDER is None)


class OtlpLogExporter:
    """Send each durable audit event to an OTLP/HTTP logs endpoint (batched, best effort).

    A failing export is logged on ``guard.audit`` as other audit failures are: the
    first at once (error), then at most once a minute with a count, then the
    recovery; never once per event. ``endpoint``: ``http://collector:4318/v1/logs``.
    """

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
        from opentelemetry.sdk.resources import Resource

        shown = urlsplit(endpoint)  # no user, password or query in a log line
        self.failures = FailureLog(f"audit OTLP export to {shown.scheme}://"
                                   f"{shown.netloc.rpartition('@')[2]}{shown.path}")
        exporter = OTLPLogExporter(endpoint=endpoint, timeout=5)
        export = exporter.export

        def reported(batch: Any) -> Any:  # the SDK's result, told to the failure log
            try:
                result = export(batch)
            except Exception as exc:
                self.failures.failed(f"{type(exc).__name__}: {exc}")
                raise
            if result is LogRecordExportResult.SUCCESS:
                self.failures.succeeded()
            else:
                self.failures.failed(f"{len(batch)} event(s) not exported")
            return result

        exporter.export = reported  # type: ignore[method-assign]
        self._provider = LoggerProvider(resource=Resource.create({"service.name": "purpose-guard"}))
        self._provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        self._logger = self._provider.get_logger("purpose-guard.audit")

    def __call__(self, events: Sequence[AuditEvent]) -> None:
        """Queue ``events`` for export (a failure to queue is logged, never raised)."""
        try:
            for event in events:
                data = event.to_dict()  # the body: one JSON line, keys sorted (hash included)
                attributes = {
                    f"audit.{key}": value
                    for key, value in data.items()
                    if value is not None and not isinstance(value, list)
                }
                self._logger.emit(body=orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode(),
                                  attributes=attributes, event_name=f"audit.{event.kind.value}")
        except Exception as exc:  # best effort; the journal is the record
            self.failures.failed(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._provider.shutdown()
