"""Benchmark of an image classification task: floors in process, then the service over HTTP.

Floors: ONNX Runtime and PyTorch eager, batch 1 and 32, from encoded image bytes (decode + preprocess + model:
everything the service does but HTTP) and from a ready tensor (the model alone). Service: concurrency 1 / 8 / 32
with adaptive batching on and off, one server per setting, the same PNG cells as the floors.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import find, floor_batches, serving_cost, time_calls
from benchmarks.report import row
from tasks.images import decode_image, encode_png, preprocess
from tasks.spec import ImageClassifierSpec, resolve

ROUTE = "classify"


def sample_images(spec: ImageClassifierSpec, n: int = 32) -> list[bytes]:
    """Held-out generator output encoded as PNG, as a client would send it."""
    images, _ = resolve(spec.synthetic)(n, seed=987_654)
    return [encode_png(im) for im in images]


def floor_rows(spec: ImageClassifierSpec, entry, pngs: list[bytes], device: str, seconds: float) -> list[dict]:
    from services.backends import OnnxBackend, TorchBackend, onnx_can_serve
    from tasks.classifier import from_checkpoint
    from tasks.store import verified_file

    meta = entry.info.metadata
    size, norm = meta["input_size"], meta["normalization"]
    backends = [TorchBackend(from_checkpoint(verified_file(entry, "model.pt")), device)]
    if onnx_can_serve(device):  # on a GPU only with onnxruntime-gpu installed
        backends.insert(0, OnnxBackend(verified_file(entry, "model.onnx"), device))
    else:
        print(f"floor: no ONNX Runtime row on {device} (this onnxruntime has no CUDA provider)")
    rows = []
    for backend in backends:
        for batch in floor_batches(32):
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


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    """The ratios the acceptance criteria speak of, computed from this run's rows.

    The service is compared with the floor of the backend it served with."""
    s1 = find(rows, path="service", concurrency=1, batching=True)
    f_bytes = find(rows, path="floor", backend=s1["backend"], batch=1, input="bytes")
    f_tensor = find(rows, path="floor", backend=s1["backend"], batch=1, input="tensor")
    floors = {r["backend"] for r in rows if r["path"] == "floor"}
    onnx = next((b for b in floors if b.startswith("onnxruntime")), None)
    torch = next(b for b in floors if b.startswith("pytorch"))
    lines = []
    if onnx:
        o, t = (find(rows, path="floor", backend=b, batch=1, input="tensor")["p50_ms"] for b in (onnx, torch))
        lines.append(f"ONNX Runtime vs PyTorch eager, model alone, batch 1: {t / o:.2f}x faster")
    cmax = max(concurrencies)
    on, off = (
        find(rows, path="service", concurrency=cmax, batching=True),
        find(rows, path="service", concurrency=cmax, batching=False),
    )
    return [
        *lines,
        f"service p50 at concurrency 1 / in-process {s1['backend']} floor from bytes: "
        f"{s1['p50_ms'] / f_bytes['p50_ms']:.2f}x "
        f"({s1['p50_ms']:.2f} / {f_bytes['p50_ms']:.2f} ms); over the model alone: "
        f"{s1['p50_ms'] / f_tensor['p50_ms']:.2f}x",
        serving_cost(rows, f_bytes),
        f"throughput at concurrency {cmax}, adaptive batching on / off: "
        f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
        f"({on['throughput_per_s']:.0f} / {off['throughput_per_s']:.0f} req/s)",
        "the load generator runs on the same machine as the server and takes part of its CPU",
    ]
