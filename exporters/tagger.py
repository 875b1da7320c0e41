"""ONNX export of token taggers: inputs ``input_ids`` and ``attention_mask`` (N, L) int64 with N and L dynamic,
output ``probabilities`` (N, L, 3) float32 (softmax inside the graph), checked against PyTorch on the windows of
held-out documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters.onnx import set_metadata
from exporters.validate import ParityError
from tasks import tagging
from tasks.spec import TaggerSpec

OPSET = 17
INPUTS, OUTPUT = ("input_ids", "attention_mask"), "probabilities"


def export_onnx(model, spec: TaggerSpec, tag: str, path: Path) -> None:
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {"batch": 0, "tokens": 1}
    torch.onnx.export(
        WithSoftmax(model.eval()).eval(),
        example,
        str(path),
        input_names=list(INPUTS),
        output_names=[OUTPUT],
        dynamic_axes={name: {v: k for k, v in axes.items()} for name in (*INPUTS, OUTPUT)},
        opset_version=OPSET,
        dynamo=False,
    )
    props = {
        "task": spec.name,
        "model_tag": tag,
        "labels": json.dumps(list(spec.labels)),
        "max_length": str(spec.max_length),
        "stride": str(spec.stride),
    }
    set_metadata(path, props)


class OnnxTagger:
    """(ids, mask) int64 (N, L) -> (N, L, 3) probabilities with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider"] if device == "cuda" else []
        self.session = ort.InferenceSession(str(path), options, providers=[*providers, "CPUExecutionProvider"])
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUTS[0]: ids, INPUTS[1]: mask})[0]


def validate(model, path: Path, tokenizer, texts: list[str], spec: TaggerSpec, atol: float) -> dict:
    """The windows of ``texts`` padded into batches of 1 and 7: max |p_onnx - p_torch| over real tokens within
    ``atol`` and the same B / I / O label for every token, or :class:`ParityError`."""
    import torch

    runner = OnnxTagger(path)
    windows = [w for t in texts for w in tagging.encode(tokenizer, t, spec.max_length, spec.stride).ids]
    worst, changed, n = 0.0, 0, 0
    for size in (1, 7):
        for s in range(0, len(windows), size):
            ids, mask = tagging.pad(windows[s : s + size], tokenizer.pad_token_id)
            with torch.inference_mode():
                logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            ref = torch.softmax(logits, -1).numpy()
            got = runner(ids, mask)
            real = mask.astype(bool)
            worst = max(worst, float(np.abs(got - ref)[real].max()))
            changed += int((got.argmax(-1) != ref.argmax(-1))[real].sum())
            n += int(real.sum())
    report = {"max_abs_diff": worst, "atol": atol, "changed_labels": changed, "n_tokens": n, "n_windows": len(windows)}
    if worst > atol or changed:
        raise ParityError(f"ONNX differs from PyTorch: max |dp| {worst:.2e} (tolerance {atol:g}), {changed} labels")
    return report
