"""Benchmark of an image classification task: floors in process, then the service over HTTP.

Floors: ONNX Runtime and PyTorch eager, batch 1 and 32, from encoded image bytes (decode + preprocess + model:
everything the service does but HTTP) and from a ready tensor (the model alone). Service: concurrency 1 / 8 / 32
with adaptive batching on and off, one server per setting, the same PNG cells as the floors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from benchmarks.load import multipart_request, run_load
from benchmarks.report import row
from benchmarks.server import start_server, stop_server
from tasks.images import decode_image, encode_png, preprocess
from tasks.spec import ImageClassifierSpec, resolve


def sample_images(spec: ImageClassifierSpec, n: int = 32) -> list[bytes]:
    """Held-out generator output encoded as PNG, as a client would send it."""
    images, _ = resolve(spec.synthetic)(n, seed=987_654)
    return [encode_png(im) for im in images]


def time_calls(step: Callable[[], object], seconds: float, min_iters: int = 10, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        step()
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < min_iters or time.perf_counter() < deadline:
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
    return out


def floor_rows(spec: ImageClassifierSpec, entry, pngs: list[bytes], device: str, seconds: float) -> list[dict]:
    from services.backends import OnnxBackend, TorchBackend
    from tasks.classifier import from_checkpoint
    from tasks.store import verified_file

    meta = entry.info.metadata
    size, norm = meta["input_size"], meta["normalization"]
    backends = [
        OnnxBackend(verified_file(entry, "model.onnx"), device),
        TorchBackend(from_checkpoint(verified_file(entry, "model.pt")), device),
    ]
    rows = []
    for backend in backends:
        for batch in (1, 32):
            chunk = [pngs[i % len(pngs)] for i in range(batch)]
            x = preprocess([decode_image(b) for b in chunk], size, norm["mean"], norm["std"])

            def from_bytes(chunk=chunk, backend=backend):
                backend(preprocess([decode_image(b) for b in chunk], size, norm["mean"], norm["std"]))

            for kind, step in (("bytes", from_bytes), ("tensor", lambda x=x, backend=backend: backend(x))):
                lat = time_calls(step, seconds)
                name = f"{backend.name}/{backend.device}"
                rows.append(row("floor", name, batch, 1, lat, batch / float(np.mean(lat)), input=kind))
                print(f"floor {name:22s} batch {batch:2d} {kind:6s} p50 {rows[-1]['p50_ms']:8.2f} ms")
    return rows


def service_rows(
    task: str,
    pngs: list[bytes],
    device: str,
    concurrencies: list[int],
    requests: int,
    env: dict[str, str] | None = None,
) -> list[dict]:
    rows = []
    for batching in (True, False):
        proc, url, _ = start_server(task, {"batching": batching, "device": device}, env=env)
        try:
            host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
            path = f"/v1/{task}/classify"
            reqs = [multipart_request(host, port, path, "image", f"cell{i}.png", b) for i, b in enumerate(pngs)]
            backend = served_backend(url + path, pngs[0])
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
        finally:
            stop_server(proc)
    return rows


def served_backend(url: str, png: bytes) -> str:
    """The backend the service chose, as it reports it (``onnxruntime/cpu``, ``pytorch/cuda``, ...)."""
    import json
    import urllib.request

    req = urllib.request.Request(url, data=png, headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["backend"]


def find(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    """The ratios the acceptance criteria speak of, computed from this run's rows."""
    onnx = next(r["backend"] for r in rows if r["backend"].startswith("onnxruntime") and r["path"] == "floor")
    torch = next(r["backend"] for r in rows if r["backend"].startswith("pytorch"))
    f_bytes = find(rows, path="floor", backend=onnx, batch=1, input="bytes")
    f_tensor = find(rows, path="floor", backend=onnx, batch=1, input="tensor")
    t_tensor = find(rows, path="floor", backend=torch, batch=1, input="tensor")
    s1 = find(rows, path="service", concurrency=1, batching=True)
    cmax = max(concurrencies)
    on, off = (
        find(rows, path="service", concurrency=cmax, batching=True),
        find(rows, path="service", concurrency=cmax, batching=False),
    )
    return [
        f"ONNX Runtime vs PyTorch eager, model alone, batch 1: {t_tensor['p50_ms'] / f_tensor['p50_ms']:.2f}x faster",
        f"service p50 at concurrency 1 / in-process ONNX floor from bytes: {s1['p50_ms'] / f_bytes['p50_ms']:.2f}x "
        f"({s1['p50_ms']:.2f} / {f_bytes['p50_ms']:.2f} ms); over the model alone: "
        f"{s1['p50_ms'] / f_tensor['p50_ms']:.2f}x",
        f"throughput at concurrency {cmax}, adaptive batching on / off: "
        f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
        f"({on['throughput_per_s']:.0f} / {off['throughput_per_s']:.0f} req/s)",
        "the load generator runs on the same machine as the server and takes part of its CPU",
    ]
