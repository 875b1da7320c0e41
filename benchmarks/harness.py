"""What every task's benchmark shares: timing in process, and the service under load over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from benchmarks.load import multipart_request, raw_request, run_load
from benchmarks.report import row
from benchmarks.server import start_server, stop_server

MIN_ITERS = 10  # fewest timed calls per in-process row (``python -m benchmarks --min-iters``)
FLOOR_BATCH = 0  # the larger batch of the in-process rows (``--floor-batch``; 0: each benchmark's own)
QUALITY_IMAGES = 200  # held-out synthetic images in a report's quality columns (``--quality-images``)


def floor_batches(default: int) -> tuple[int, int]:
    """The batch sizes of the in-process rows: 1 and ``default`` (or ``--floor-batch``)."""
    return 1, FLOOR_BATCH or default


def time_calls(step: Callable[[], object], seconds: float, min_iters: int | None = None) -> list[float]:
    """Latencies of ``step`` over ``seconds`` and at least ``min_iters`` calls, after a warm-up of up to 3."""
    min_iters = MIN_ITERS if min_iters is None else min_iters
    for _ in range(min(3, min_iters)):
        step()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_iters or time.perf_counter() < deadline:
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
    return out


def service_rows(
    task: str,
    route: str,
    payloads: list[bytes],
    device: str,
    concurrencies: list[int],
    requests: int,
    args: dict[str, object] | None = None,
    content_type: str | None = None,
) -> list[dict]:
    """The service at each concurrency with adaptive batching on and off. Payloads go as multipart images, or
    as raw bodies of ``content_type``; ``args`` are extra service arguments (``model_tag``). With batching on,
    a no-op row too: ``POST /noop`` through the same server and pipeline with neither decoding nor model, so the
    report shows the framework's share of each request apart from the task's work."""
    rows = []
    for batching in (True, False):
        extra = {"noop_route": True} if batching else {}
        proc, url, _ = start_server(task, {"batching": batching, "device": device, **extra, **(args or {})})
        try:
            host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
            path = f"/v1/{task}/{route}"
            if content_type is None:
                reqs = [multipart_request(host, port, path, "image", f"i{i}.png", b) for i, b in enumerate(payloads)]
            else:
                reqs = [raw_request(host, port, path, b, content_type) for b in payloads]
            backend = served_backend(url + path, payloads[0], content_type or "image/png")
            for c in concurrencies:
                asyncio.run(run_load(host, port, reqs, c, max(20, 2 * c)))  # warm-up, connections, batching
                total = max(requests, 10 * c)
                res = asyncio.run(run_load(host, port, reqs, c, total))
                rows.append(
                    row(
                        "service",
                        backend,
                        1,
                        c,
                        res.latencies_s,
                        total / res.wall_s,
                        res.errors,
                        input="bytes",
                        batching=batching,
                    )
                )
                print(
                    f"service batching={batching!s:5s} c={c:2d} p50 {rows[-1]['p50_ms']:8.2f} ms "
                    f"{rows[-1]['throughput_per_s']:8.1f} req/s errors {res.errors}"
                )
            if batching:
                rows += noop_rows(host, port, task, concurrencies, requests)
        finally:
            stop_server(proc)
    return rows


def noop_rows(host: str, port: int, task: str, concurrencies: list[int], requests: int) -> list[dict]:
    """``POST /v1/<task>/noop`` (a one-byte text body) at each concurrency: the serving path's own cost."""
    reqs = [raw_request(host, port, f"/v1/{task}/noop", b"x", "text/plain")]
    rows = []
    for c in concurrencies:
        asyncio.run(run_load(host, port, reqs, c, max(20, 2 * c)))
        total = max(requests, 10 * c)
        res = asyncio.run(run_load(host, port, reqs, c, total))
        rows.append(row("noop", "pipeline", 1, c, res.latencies_s, total / res.wall_s, res.errors, input="none"))
        print(f"service noop           c={c:2d} p50 {rows[-1]['p50_ms']:8.2f} ms errors {res.errors}")
    return rows


def served_backend(url: str, payload: bytes, content_type: str = "image/png") -> str:
    """The backend the service chose, as it reports it (``onnxruntime/cpu``, ``pytorch/cuda``, ...)."""
    import json
    import urllib.request

    req = urllib.request.Request(url, data=payload, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["backend"]


def find(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def serving_cost(rows: list[dict], floor_bytes: dict) -> str:
    """The line that tells the serving path's own share at concurrency 1: service minus in-process from the same
    bytes, next to the no-op route through the same server and pipeline."""
    s1 = find(rows, path="service", concurrency=1, batching=True)
    noop = next((r for r in rows if r["path"] == "noop" and r["concurrency"] == 1), None)
    line = f"service p50 - in-process p50 from bytes, concurrency 1: {s1['p50_ms'] - floor_bytes['p50_ms']:.2f} ms"
    return line + (
        f"; the no-op route (same server and pipeline, no decoding, no model): {noop['p50_ms']:.2f} ms" if noop else ""
    )
