"""Prometheus metrics of the server, on a registry of its own (two apps in a process do not clash).

| metric | type | labels |
|---|---|---|
| `mediagen_serve_requests_total` | counter | `method`, `route` (the route template, never a raw path), `status` |
| `mediagen_serve_request_seconds` | histogram | `route` |
| `mediagen_serve_predictions_total` | counter | `model`, `status` |
| `mediagen_serve_queue_depth` | gauge | (predictions created, not started) |
| `mediagen_serve_running` | gauge | (predictions started, not ended) |
| `mediagen_serve_batch_size` | histogram | `model` (outputs in the device call that served a prediction) |
| `mediagen_serve_device_seconds_total` | counter | `model` (device time reported by local backends) |
| `mediagen_serve_errors_total` | counter | `kind` (`InvalidRequestError`, `unauthenticated`, `rate_limited` ...) |
| `mediagen_serve_webhooks_total` | counter | `outcome` (`delivered`: a 2xx answer; `failed`: given up on) |
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ServeMetrics"]


class ServeMetrics:
    """The server's metrics.

    Args:
        queue_depth: Returns predictions waiting to start.
        running: Returns predictions running.
    """

    def __init__(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mediagen_serve_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "mediagen_serve_request_seconds", "Time to answer an HTTP request.", ["route"], registry=self.registry
        )
        self.predictions = Counter(
            "mediagen_serve_predictions", "Predictions ended, by outcome.", ["model", "status"], registry=self.registry
        )
        self.queue_depth = Gauge("mediagen_serve_queue_depth", "Predictions waiting to start.", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self.running = Gauge("mediagen_serve_running", "Predictions running.", registry=self.registry)
        self.running.set_function(running)
        self.batch_size = Histogram(
            "mediagen_serve_batch_size",
            "Outputs made by the device call that served a prediction.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.device_seconds = Counter(
            "mediagen_serve_device_seconds", "Device time spent on predictions.", ["model"], registry=self.registry
        )
        self.errors = Counter("mediagen_serve_errors", "Errors, by kind.", ["kind"], registry=self.registry)
        self.webhooks = Counter(
            "mediagen_serve_webhooks", "Webhook deliveries ended, by outcome.", ["outcome"], registry=self.registry
        )

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
