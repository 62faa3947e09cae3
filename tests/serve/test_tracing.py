"""OpenTelemetry: a prediction's span continues the caller's trace; each attempt is a child span."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from mediagen_testkit.serve_server import TEST_TOKEN, ServeServer, fake_model

pytest.importorskip("opentelemetry.sdk")


def test_prediction_and_attempt_spans_join_the_callers_trace(start_server: Callable[..., ServeServer]) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process: no other test sets one
    server = start_server(models=[fake_model("fox", "image")])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    response = httpx.post(
        f"{server.url}/v1/models/acme/fox/predictions",
        json={"input": {"prompt": "a fox"}},
        headers={
            "Authorization": f"Bearer {TEST_TOKEN}",
            "Prefer": "wait",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        },
    )

    assert response.json()["status"] == "succeeded"
    spans = {span.name: span for span in exporter.get_finished_spans()}
    job, attempt = spans["mediagen.prediction"], spans["mediagen.attempt"]
    assert format(job.context.trace_id, "032x") == trace_id
    assert attempt.parent is not None and attempt.parent.span_id == job.context.span_id
    assert job.attributes["mediagen.status"] == "succeeded"
    assert attempt.attributes["mediagen.backend"] == "test:fake"
