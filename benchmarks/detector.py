"""Benchmark of a detection task: ONNX Runtime with the suite's letterbox and NMS, the PyTorch module, and
ultralytics' own ``predict`` (the usual way to serve YOLO), in process; then the service over HTTP."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import find, floor_batches, serving_cost, time_calls
from benchmarks.report import row
from tasks.detection import letterbox, postprocess, to_input
from tasks.images import decode_image, encode_png
from tasks.spec import DetectorSpec, resolve

ROUTE = "detect"


def sample_images(spec: DetectorSpec, n: int = 16) -> list[bytes]:
    images, _, _ = resolve(spec.synthetic)(n, seed=987_654)
    return [encode_png(im) for im in images]


def floor_rows(spec: DetectorSpec, entry, pngs: list[bytes], device: str, seconds: float) -> list[dict]:
    import torch

    from services.backends import OnnxBackend
    from tasks.store import verified_file
    from training.detector import offline_ultralytics

    offline_ultralytics(Path(tempfile.mkdtemp()))
    from ultralytics import YOLO

    size = entry.info.metadata["input_size"]
    onnx = OnnxBackend(verified_file(entry, "model.onnx"), device)
    yolo = YOLO(str(verified_file(entry, "model.pt")))
    torch_device = "cuda" if device == "cuda" else "cpu"
    net = yolo.model.float().eval().to(torch_device)

    def module(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x).to(torch_device))[0].cpu().numpy()

    rows = []
    for name, run in ((f"onnxruntime/{onnx.device}", onnx), (f"pytorch/{torch_device}", module)):
        for batch in floor_batches(16):
            chunk = [pngs[i % len(pngs)] for i in range(batch)]
            fitted = [letterbox(np.asarray(decode_image(b, gray=True)), size) for b in chunk]
            x = to_input([f for f, _ in fitted])

            def from_bytes(chunk=chunk, run=run):
                pairs = [letterbox(np.asarray(decode_image(b, gray=True)), size) for b in chunk]
                out = run(to_input([f for f, _ in pairs]))
                postprocess(out, [i for _, i in pairs], spec.conf, spec.iou, spec.max_det)

            for kind, step in (("bytes", from_bytes), ("tensor", lambda x=x, run=run: run(x))):
                lat = time_calls(step, seconds)
                rows.append(row("floor", name, batch, 1, lat, batch / float(np.mean(lat)), input=kind))
                print(f"floor {name:22s} batch {batch:2d} {kind:6s} p50 {rows[-1]['p50_ms']:8.2f} ms")
    # ultralytics' own pipeline: decode, letterbox, model, NMS, results objects.
    gray = [np.asarray(decode_image(b, gray=True)) for b in pngs]
    arrays = [np.repeat(g[..., None], 3, axis=2) for g in gray]

    def predict(i=[0]):  # noqa: B006 - a counter across calls
        i[0] += 1
        yolo.predict(
            arrays[i[0] % len(arrays)], imgsz=size, conf=spec.conf, iou=spec.iou, device=torch_device, verbose=False
        )

    lat = time_calls(predict, seconds)
    rows.append(row("floor", f"ultralytics/{torch_device}", 1, 1, lat, 1 / float(np.mean(lat)), input="array"))
    print(f"floor ultralytics predict batch  1 p50 {rows[-1]['p50_ms']:8.2f} ms")
    AGREEMENT.append(agreement(spec, size, onnx, yolo, gray, arrays, torch_device))
    return rows


AGREEMENT: list[str] = []


def agreement(
    spec: DetectorSpec, size: int, onnx, yolo, gray: list[np.ndarray], arrays: list[np.ndarray], device: str
) -> str:
    """How many of ultralytics' boxes the ONNX path reproduces (same class, IoU >= 0.9) on the sample slices."""
    from tasks.detection import iou

    matched = total = extra = 0
    for g, a in zip(gray, arrays, strict=True):
        ref = yolo.predict(a, imgsz=size, conf=spec.conf, iou=spec.iou, device=device, verbose=False)[0].boxes
        fitted, info = letterbox(g, size)
        ours = postprocess(onnx(to_input([fitted])), [info], spec.conf, spec.iou, spec.max_det)[0]
        ref_xyxy, ref_cls = ref.xyxy.cpu().numpy(), ref.cls.cpu().numpy().astype(int)
        for box, cls in zip(ref_xyxy, ref_cls, strict=True):
            same = ours.classes == cls
            total += 1
            matched += bool(same.any() and iou(box[None], ours.boxes[same]).max() >= 0.9)
        extra += max(0, len(ours.boxes) - len(ref_xyxy))
    return (
        f"agreement with ultralytics predict on {len(gray)} held-out slices: {matched}/{total} of its boxes "
        f"reproduced (same class, IoU >= 0.9), {extra} extra boxes"
    )


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    onnx = next(r["backend"] for r in rows if r["backend"].startswith("onnxruntime") and r["path"] == "floor")
    torch = next(r["backend"] for r in rows if r["backend"].startswith("pytorch"))
    ultra = next(r for r in rows if r["backend"].startswith("ultralytics"))
    f_bytes = find(rows, path="floor", backend=onnx, batch=1, input="bytes")
    f_tensor = find(rows, path="floor", backend=onnx, batch=1, input="tensor")
    t_tensor = find(rows, path="floor", backend=torch, batch=1, input="tensor")
    s1 = find(rows, path="service", concurrency=1, batching=True)
    cmax = max(concurrencies)
    on = find(rows, path="service", concurrency=cmax, batching=True)
    off = find(rows, path="service", concurrency=cmax, batching=False)
    return [
        f"ONNX path in process (PNG bytes -> boxes) vs ultralytics predict, batch 1: "
        f"{ultra['p50_ms'] / f_bytes['p50_ms']:.2f}x faster ({f_bytes['p50_ms']:.2f} vs {ultra['p50_ms']:.2f} ms)",
        f"ONNX Runtime vs PyTorch module, model alone, batch 1: {t_tensor['p50_ms'] / f_tensor['p50_ms']:.2f}x",
        f"service p50 at concurrency 1 / in-process ONNX from bytes: {s1['p50_ms'] / f_bytes['p50_ms']:.2f}x "
        f"({s1['p50_ms']:.2f} / {f_bytes['p50_ms']:.2f} ms)",
        serving_cost(rows, f_bytes),
        f"throughput at concurrency {cmax}, adaptive batching on / off: "
        f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
        f"({on['throughput_per_s']:.0f} / {off['throughput_per_s']:.0f} req/s)",
        *AGREEMENT,
        "ultralytics predict is given a decoded array (it skips PNG decoding); the ONNX row starts from PNG bytes",
        "the load generator runs on the same machine as the server and takes part of its CPU",
    ]
