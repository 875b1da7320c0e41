"""Prometheus metrics every task service shares (labelled by task), exposed on BentoML's ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable

import bentoml

BATCH_SIZE = bentoml.metrics.Histogram(
    name="model_batch_size",
    documentation="Inputs per model call (adaptive batching)",
    labelnames=["task"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
MODEL_SECONDS = bentoml.metrics.Histogram(
    name="model_call_seconds",
    documentation="Time of one model call",
    labelnames=["task"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REJECTED = bentoml.metrics.Counter(
    name="rejected_requests", documentation="Requests refused with a 4xx", labelnames=["task", "status"]
)


def observer(task: str) -> Callable[[int, float], None]:
    """The batcher's callback: record batch size and model time for ``task``."""

    def observe(n: int, seconds: float) -> None:
        BATCH_SIZE.labels(task=task).observe(n)
        MODEL_SECONDS.labels(task=task).observe(seconds)

    return observe


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
