"""Prometheus metrics every task service shares (labelled by task), exposed on BentoML's ``/metrics``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable

import bentoml
from prometheus_client import CONTENT_TYPE_LATEST

BATCH_SIZE = bentoml.metrics.Histogram(
    name="model_batch_size",
    documentation="Inputs per model call (adaptive batching), by the model version that ran it",
    labelnames=["task", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="model_call_seconds",
    documentation="Time of one model call, by the model version that ran it",
    labelnames=["task", "version"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = bentoml.metrics.Counter(
    name="rejected_requests", documentation="Requests refused with a 4xx", labelnames=["task", "status"]
)


def observer(task: str, version: str) -> Callable[[int, float], None]:
    """The batcher's callback: record batch size and model time for ``task``'s model ``version``."""
    sizes, seconds_of = BATCH_SIZE.labels(task=task, version=version), MODEL_SECONDS.labels(task=task, version=version)

    def observe(n: int, seconds: float) -> None:
        sizes.observe(n)
        seconds_of.observe(seconds)

    return observe


MODEL_INFO = bentoml.metrics.Gauge(
    name="suite_model_info",
    documentation="1 for the model version a task serves now, 0 for one it served before (services/versions.py)",
    labelnames=["service", "version"],
    multiprocess_mode="livemax",
)
MODEL_LOADS = bentoml.metrics.Counter(
    name="suite_model_loads",
    documentation="Model versions loaded (outcome: loaded, failed: the version serving before kept serving)",
    labelnames=["service", "version", "outcome"],
)


def model_serving(task: str, version: str, serving: bool) -> None:
    MODEL_INFO.labels(service=task, version=version).set(1 if serving else 0)


def model_loaded(task: str, version: str, outcome: str) -> None:
    MODEL_LOADS.labels(service=task, version=version, outcome=outcome).inc()


def rejected(task: str, status: int) -> None:
    REJECTED.labels(task=task, status=str(status)).inc()


QUEUE_DEPTH = bentoml.metrics.Gauge(
    name="model_queue_items",
    documentation="Items waiting for the model (admitted, not yet in a model call)",
    labelnames=["task"],
    multiprocess_mode="livemax",
)
QUEUE_WAIT = bentoml.metrics.Histogram(
    name="model_queue_wait_seconds",
    documentation="Time a request waited in the queue before its model call started",
    labelnames=["task"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
OVERLOADED = bentoml.metrics.Counter(
    name="admission_rejected_requests",
    documentation="Requests refused with 503 at admission (the predicted wait passed the latency budget)",
    labelnames=["task"],
)


def queue_observer(task: str) -> Callable[[int, float | None], None]:
    """The batcher's queue callback: queue depth, and the wait of each request as its model call starts."""
    depth, wait_hist = QUEUE_DEPTH.labels(task=task), QUEUE_WAIT.labels(task=task)

    def on_queue(items: int, wait: float | None) -> None:
        depth.set(items)
        if wait is not None:
            wait_hist.observe(wait)

    return on_queue


def overloaded(task: str) -> None:
    OVERLOADED.labels(task=task).inc()


# --- request metrics ----------------------------------------------------------------------------------------
# BentoML's own HTTP metrics label each request with its raw path: every unknown URL a client invents becomes a
# new time series, and /metrics grows without bound. These label with the route the request matched, or "other".

REQUESTS = bentoml.metrics.Counter(
    name="http_requests", documentation="HTTP requests answered", labelnames=["service", "endpoint", "code"]
)
REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="http_request_duration_seconds",
    documentation="Time from a request's arrival to the end of its response",
    labelnames=["service", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
OTHER = "other"


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request under its route (``known`` paths, or a ``prefixes``
    entry, else "other") and status code."""

    def __init__(self, app, service: str, known: Iterable[str], prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.service = service
        self.known = frozenset(known)
        self.prefixes = prefixes

    def endpoint(self, path: str) -> str:
        if path in self.known:
            return path
        return next((p for p in self.prefixes if path.startswith(p)), OTHER)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint, start, code = self.endpoint(scope["path"]), time.perf_counter(), 500

        async def counted(message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            REQUESTS.labels(service=self.service, endpoint=endpoint, code=str(code)).inc()
            REQUEST_SECONDS.labels(service=self.service, endpoint=endpoint).observe(time.perf_counter() - start)


class MetricsEndpoint:
    """ASGI middleware serving ``GET /metrics``: the metrics of every process of the server (BentoML's
    multiprocess directory), in Prometheus' text format."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics":
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD"):
            body, status, ctype = b'{"error": "method not allowed: use GET"}', 405, b"application/json"
        else:
            body, status, ctype = await asyncio.to_thread(exposition), 200, CONTENT_TYPE_LATEST.encode()
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


def exposition() -> bytes:
    """Every process's metrics (``PROMETHEUS_MULTIPROC_DIR``, which BentoML sets for its workers), histogram
    samples in the order the text format wants (buckets, then count and sum)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    metrics = list(registry.collect())
    for metric in metrics:
        if metric.type == "histogram":
            order = {"_bucket": 0, "_count": 1, "_sum": 2}
            metric.samples.sort(
                key=lambda s: (
                    tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")),
                    next((i for suffix, i in order.items() if s.name.endswith(suffix)), 3),
                    float(s.labels.get("le", "inf").replace("+Inf", "inf")),
                )
            )
    return generate_latest(_Fixed(metrics))


class _Fixed:
    """A collector that yields metrics already collected (``generate_latest`` takes a registry)."""

    def __init__(self, metrics: list) -> None:
        self.metrics = metrics

    def collect(self):
        return iter(self.metrics)
