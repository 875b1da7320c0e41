"""ONNX export of YOLO detectors through ultralytics (opset 18, onnxslim), checked against PyTorch.

Parity is measured after our own letterbox and NMS: on the same input tensors, every detection of the PyTorch
model must have an ONNX detection of the same class with IoU >= the task's ``export_min_iou`` and a confidence
within ``export_atol``, and the counts must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters.validate import ParityError
from tasks.detection import iou, letterbox, postprocess, to_input
from tasks.spec import DetectorSpec, resolve

OPSET = 18


def validation_slices(spec: DetectorSpec, n: int, seed: int) -> list[np.ndarray]:
    """Held-out synthetic slices plus real slices with nothing planted (HxW uint8)."""
    from tasks.medical import window_to_uint8
    from training.datasets.mri import base_volumes

    images, _, _ = resolve(spec.synthetic)(n, seed=seed)
    real = base_volumes()["example4d-t0"]
    images += [window_to_uint8(real[:, :, z]) for z in range(0, real.shape[2], 6)]
    return images


def export_onnx(weights: Path, spec: DetectorSpec, meta: dict, tag: str, out: Path) -> None:
    """Write the detector to ``out``: input ``images`` (N, 3, S, S) float32 0..1, output (N, 4 + C, anchors)."""
    import onnx
    from ultralytics import YOLO

    written = Path(
        YOLO(str(weights)).export(
            format="onnx", imgsz=meta["input_size"], dynamic=True, simplify=True, opset=OPSET, verbose=False
        )
    )
    proto = onnx.load(str(written))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(
        task=spec.name,
        model_tag=tag,
        labels=json.dumps(list(spec.labels)),
        input_size=str(meta["input_size"]),
        input_layout="NCHW float32 RGB 0..1, letterboxed (pad 114)",
    )
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(out))
    if written.resolve() != out.resolve():
        written.unlink()


def onnx_runner(onnx_path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})[0]


def validate(weights: Path, run, spec: DetectorSpec, meta: dict, images: list[np.ndarray], atol: float) -> dict:
    """Compare ``run`` ((N, 3, S, S) -> raw detect output, e.g. ONNX Runtime or a TensorRT engine) with the
    PyTorch model on ``images`` after the same letterbox and NMS."""
    import torch
    from ultralytics import YOLO

    size = meta["input_size"]
    net = YOLO(str(weights)).model.float().eval()
    boxes_total, worst_iou, worst_conf = 0, 1.0, 0.0
    for img in images:
        fitted, info = letterbox(img, size)
        x = to_input([fitted])
        with torch.inference_mode():
            ref = net(torch.from_numpy(x))[0].numpy()
        got = run(x)
        a = postprocess(ref, [info], spec.conf, spec.iou, spec.max_det)[0]
        b = postprocess(got, [info], spec.conf, spec.iou, spec.max_det)[0]
        if len(a.boxes) != len(b.boxes):
            raise ParityError(f"PyTorch finds {len(a.boxes)} boxes, the export {len(b.boxes)} on the same slice")
        for k in range(len(a.boxes)):
            same = b.classes == a.classes[k]
            if not same.any():
                raise ParityError(f"the export has no {spec.labels[a.classes[k]]} box where PyTorch has one")
            overlaps = iou(a.boxes[k : k + 1], b.boxes[same])[0]
            j = int(overlaps.argmax())
            worst_iou = min(worst_iou, float(overlaps[j]))
            worst_conf = max(worst_conf, float(abs(a.scores[k] - b.scores[same][j])))
        boxes_total += len(a.boxes)
    report = {
        "n_images": len(images),
        "boxes": boxes_total,
        "min_iou": worst_iou,
        "max_conf_diff": worst_conf,
        "min_iou_required": spec.export_min_iou,
        "atol": spec.export_atol,
        "max_abs_diff": worst_conf,
    }
    if worst_iou < spec.export_min_iou or worst_conf > spec.export_atol:
        raise ParityError(
            f"ONNX boxes drift from PyTorch: min IoU {worst_iou:.4f} (need {spec.export_min_iou}), "
            f"max confidence difference {worst_conf:.2e} (tolerance {spec.export_atol:g})"
        )
    return report
