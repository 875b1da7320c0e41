"""TensorRT FP16 engine from an entry's ONNX file (needs TensorRT and an NVIDIA GPU), for any task whose ONNX
model has one image input (N, 3, S, S) and one output.

The engine has an optimisation profile for batch 1..``max_batch`` and is validated against PyTorch on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.validate import check_parity


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing on this host."""


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: `pip install tensorrt` on a host with an NVIDIA GPU and driver, "
            "then run this export there (ONNX export works everywhere: --format onnx)"
        ) from e
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT is installed but torch sees no CUDA GPU on this host")
    return trt


def build_engine(onnx_path: Path, engine_path: Path, size: int, max_batch: int = 64) -> None:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, 3, size, size), (max(1, max_batch // 2), 3, size, size), (max_batch, 3, size, size))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    engine_path.write_bytes(bytes(serialized))


class TensorRTRunner:
    """Runs a serialized engine on torch CUDA tensors: (N, 3, S, S) float32 numpy -> (N, C) numpy."""

    def __init__(self, engine_path: Path) -> None:
        trt = require_tensorrt()
        import torch

        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        self.input = next(n for n, i in zip(names, is_input, strict=True) if i)
        self.output = next(n for n, i in zip(names, is_input, strict=True) if not i)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        inp = torch.from_numpy(np.ascontiguousarray(x, np.float32)).cuda()
        self.context.set_input_shape(self.input, tuple(inp.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input, inp.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.cpu().numpy()


def validate_engine(model, engine_path: Path, x: np.ndarray, atol: float) -> dict:
    import torch

    def reference(xb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(xb)), 1).numpy()

    return check_parity(reference, TensorRTRunner(engine_path), x, atol)
