"""OpenTelemetry spans per prediction and per attempt, when `opentelemetry-api` is installed.

Without it every call here does nothing. With it, a prediction's span continues the trace of the
request that created it (W3C `traceparent`), so one trace follows a job from the calling app
through the server to the backend; each attempt (a chain member starting) is a child span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Span", "start_span"]


class Span:
    """A started span, or nothing (no OpenTelemetry). End it exactly once."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set an attribute."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error: BaseException) -> None:
        """Record an error and mark the span failed."""
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    def child(self, name: str, attributes: Mapping[str, Any] | None = None) -> Span:
        """Start a child span."""
        if self._span is None:
            return Span()
        from opentelemetry import trace

        tracer = trace.get_tracer("mediagen.serve")
        return Span(tracer.start_span(name, context=trace.set_span_in_context(self._span), attributes=attributes))

    def end(self) -> None:
        """End the span."""
        if self._span is not None:
            self._span.end()
            self._span = None


def start_span(
    name: str, headers: Mapping[str, str] | None = None, attributes: Mapping[str, Any] | None = None
) -> Span:
    """Start a span, continuing the trace in `headers` (`traceparent`) when there is one."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return Span()
    context = propagate.extract(dict(headers or {}))
    return Span(trace.get_tracer("mediagen.serve").start_span(name, context=context, attributes=attributes))
