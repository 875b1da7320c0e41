"""Inference backends chosen at start: ONNX Runtime (CUDA provider when present), PyTorch as the fallback. For the
image classifiers each maps (N, 3, S, S) float32 -> (N, C) probabilities; :class:`OnnxBackend` runs any
single-input model (the palette generator too)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from tasks.store import verified_file


def cpu_quota() -> int:
    """The CPUs this process may use: the cgroup's quota (``cpu.max`` in cgroup v2, ``cfs_quota_us`` in v1), rounded
    up, where one is set; else the cores it may run on. A pod limited to ``cpu: "2"`` on a 64-core node gets 2
    threads, not 64 that fight over two cores' time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for path, parse in (("/sys/fs/cgroup/cpu.max", _v2), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", _v1)):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        quota = parse(text, path)
        if quota:
            return max(1, min(cores, math.ceil(quota)))
    return cores


def _v2(text: str, _path: str) -> float | None:
    fields = text.split()
    if len(fields) == 2 and fields[0] != "max":
        return int(fields[0]) / int(fields[1])
    return None


def _v1(text: str, path: str) -> float | None:
    quota = int(text.strip())
    if quota <= 0:
        return None
    return quota / int(Path(path).with_name("cpu.cfs_period_us").read_text().strip())


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError(f"device=cuda, but this onnxruntime has no CUDA provider (has: {available})")
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_quota()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: x})[0]


class TorchBackend:
    """PyTorch eager; on a GPU in fp16 (the tensor cores' precision), on the CPU in fp32."""

    name = "pytorch"

    def __init__(self, model, device: str = "auto", threads: int = 0) -> None:
        import torch

        torch.set_num_threads(threads or cpu_quota())
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda, but torch sees no CUDA GPU")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.torch = torch
        self.model = model.to(self.device, self.dtype).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(x).to(self.device, self.dtype))
            return torch.softmax(logits.float(), 1).cpu().numpy()


def onnx_can_serve(device: str) -> bool:
    """ONNX Runtime is importable and, when a GPU is asked for, has its CUDA provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return device != "cuda" or "CUDAExecutionProvider" in ort.get_available_providers()


def load_backend(entry, preference: str = "auto", device: str = "auto", threads: int = 0):
    """The fastest backend this host and entry allow.

    ``auto``: ONNX Runtime when the entry has an ONNX export and ONNX Runtime can run on ``device`` (CPU, or
    GPU with onnxruntime-gpu), else PyTorch. ``onnx`` / ``pytorch`` force one; a forced backend that cannot load
    is an error.
    """
    has_onnx = "model.onnx" in entry.info.metadata.get("files", {})
    if preference == "onnx" or (preference == "auto" and has_onnx and onnx_can_serve(device)):
        if not has_onnx:
            raise FileNotFoundError(f"{entry.tag} has no ONNX export: run `python -m exporters <task> --format onnx`")
        return OnnxBackend(verified_file(entry, "model.onnx"), device, threads)
    from tasks.classifier import from_checkpoint

    return TorchBackend(from_checkpoint(verified_file(entry, "model.pt")), device, threads)
