"""Frozen task specifications: what a model of a task takes, returns and is built from."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve(dotted: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` lazily (keeps the registry free of heavy imports)."""
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ImageClassifierSpec:
    """A generic image classification task: a new one is this configuration, not new code.

    ``synthetic`` names a generator ``f(n, seed) -> (images: list[np.ndarray HxWx3 uint8], labels: list[int])``.
    """

    name: str
    labels: tuple[str, ...]
    description: str
    synthetic: str
    backbone: str = "efficientnet_b0"
    input_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Class whose precision / recall / F1 are reported for binary tasks (None: macro averages).
    positive_label: str | None = None
    # Export parity: max |p_onnx - p_torch| over validation images.
    export_atol: float = 1e-4
    export_atol_fp16: float = 2e-2  # TensorRT / fp16 engines
    # Smallest image side accepted at serving time; smaller crops carry no usable signal.
    min_side: int = 16
    # Demo-model training defaults (overridable from the CLI / YAML).
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "image-classification"

    @property
    def num_classes(self) -> int:
        return len(self.labels)
