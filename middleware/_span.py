"""The current OpenTelemetry span, read as ``trace.get_current_span()`` reads it, in one look-up.

``trace.get_current_span()`` goes through four calls of the API's (``get_value``,
``get_current``, the runtime context's ``get_current``, the context variable).
With the API's default runtime context (``contextvars``; opentelemetry-api is
pinned), :data:`CONTEXT` is its context variable and the middleware reads the span
from it directly: ``CONTEXT.get().get(SPAN_KEY)``, checked to be a ``Span``
(:data:`INVALID_SPAN` otherwise), as the API does. With any other runtime context
:data:`CONTEXT` is None and :func:`current_span` asks the API
(tests/middleware/test_span.py holds the two to the same answer).
"""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span

__all__ = ["CONTEXT", "INVALID_SPAN", "SPAN_KEY", "current_span"]


def _context_variable() -> ContextVar[Context] | None:
    """The API's current-context variable when its runtime context is the default one."""
    try:
        from opentelemetry.context import _RUNTIME_CONTEXT
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
    except ImportError:  # pragma: no cover - another version of the API
        return None
    if type(_RUNTIME_CONTEXT) is not ContextVarsRuntimeContext:
        return None
    variable = getattr(_RUNTIME_CONTEXT, "_current_context", None)
    return variable if isinstance(variable, ContextVar) else None


def _span_key() -> str:
    try:
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:  # pragma: no cover - another version of the API
        return ""
    return _SPAN_KEY


SPAN_KEY = _span_key()
"""The key the API keeps the current span under in a context."""
CONTEXT: ContextVar[Context] | None = _context_variable() if SPAN_KEY else None
"""The API's current-context variable (None: ask :func:`current_span`)."""


def current_span() -> Span:
    """The current span, as ``trace.get_current_span()`` answers."""
    if CONTEXT is None:
        return trace.get_current_span()
    span = CONTEXT.get().get(SPAN_KEY)
    return INVALID_SPAN if span is None or not isinstance(span, Span) else span
