"""ONNX export of the palette generator: input ``images`` (N, 3, S, S) float32 (scaled CIELAB, N dynamic), output
``colours`` (N, R, 3) float32 CIELAB, one row block per palette size; checked against PyTorch on held-out photos
and synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters.onnx import export_images_model, set_metadata
from exporters.validate import ParityError
from tasks import palette as P
from tasks.spec import PaletteSpec

INPUT, OUTPUT = "images", "colours"


def export_onnx(model, spec: PaletteSpec, tag: str, path: Path) -> None:
    size = spec.input_size
    export_images_model(model.eval(), size, path, INPUT, OUTPUT)
    props = {
        "task": spec.name,
        "model_tag": tag,
        "input_size": str(size),
        "head_offsets": json.dumps(P.head_offsets(spec)),
        "input_layout": "NCHW float32, CIELAB: (L - 50) / 50, a / 100, b / 100",
    }
    set_metadata(path, props)


def validate(model, path: Path, x: np.ndarray, atol: float) -> dict:
    """Max |Lab_onnx - Lab_torch| over every colour of every palette size, at batch 1 and 7, within ``atol``
    (CIELAB units), or :class:`ParityError`."""
    import torch

    from services.backends import OnnxBackend

    runner = OnnxBackend(path, "cpu")
    worst = 0.0
    for size in (1, 7):
        for s in range(0, len(x), size):
            with torch.inference_mode():
                ref = model(torch.from_numpy(x[s : s + size])).numpy()
            got = runner(x[s : s + size])
            if got.shape != ref.shape:
                raise ParityError(f"output shape {got.shape} differs from PyTorch's {ref.shape}")
            worst = max(worst, float(np.abs(got - ref).max()))
    report = {"max_abs_diff": worst, "atol": atol, "n_images": len(x), "batch_sizes": [1, 7]}
    if worst > atol:
        raise ParityError(f"ONNX differs from PyTorch: max |dLab| {worst:.2e} (tolerance {atol:g})")
    return report
