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
