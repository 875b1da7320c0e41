"""ONNX export of image classifiers: dynamic batch, self-describing ``metadata_props``, parity-checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters.validate import check_parity
from tasks.spec import ImageClassifierSpec

OPSET = 17
INPUT, OUTPUT = "images", "probabilities"


def export_onnx(model, spec: ImageClassifierSpec, meta: dict, tag: str, path: Path) -> None:
    """Write ``model`` (eval, CPU) to ``path``; its graph ends in softmax.

    Input ``images`` (N, 3, S, S) float32, output ``probabilities`` (N, C) float32; N is dynamic.
    """
    import torch

    size = meta["input_size"]

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=1)

    export_images_model(WithSoftmax(model.eval()).eval(), size, path, INPUT, OUTPUT)
    props = {
        "task": spec.name,
        "model_tag": tag,
        "labels": json.dumps(list(spec.labels)),
        "input_size": str(size),
        "normalization": json.dumps(meta["normalization"]),
        "input_layout": "NCHW float32, RGB",
    }
    set_metadata(path, props)


def export_images_model(model, size: int, path: Path, input_name: str, output_name: str) -> None:
    """``torch.onnx.export`` of a model of (N, 3, size, size) images, N dynamic, at the suite's opset."""
    import torch

    torch.onnx.export(
        model,
        (torch.zeros(2, 3, size, size),),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the ONNX file's ``metadata_props`` with ``props`` and check the model."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def onnx_runner(path: Path):
    """A CPU ONNX Runtime callable (N, 3, S, S) -> (N, C) for validation."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, np.float32)})[0]


def validate_onnx(model, path: Path, x: np.ndarray, atol: float) -> dict:
    import torch

    def reference(xb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(xb)), 1).numpy()

    return check_parity(reference, onnx_runner(path), x, atol)
