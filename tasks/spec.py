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
    title: str = ""  # the web page's tab (default: the name)
    heading: str = ""  # the web page's panel heading (default: the title)
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
    # The shifted held-out set's shifts (training/datasets/shift.py): ranges training never saw.
    shifts: tuple[str, ...] = ("illumination", "blur")
    # Demo-model training defaults (overridable from the CLI / YAML).
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "image-classification"

    @property
    def export_format(self) -> str:
        """The format the demo build exports and the service serves."""
        return "onnx"

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DetectorSpec:
    """An object detection task served from an exported YOLO model (ultralytics at training time only).

    ``synthetic`` names a generator ``f(n, seed) -> (images: list[HxW uint8], targets: list[list[(cls, x0, y0,
    x1, y1)]], groups: list[str])``; ``groups`` (patient / volume ids) keep related images on one side of a split.
    """

    name: str
    labels: tuple[str, ...]
    description: str
    synthetic: str
    model_yaml: str = "yolo11n.yaml"
    input_size: int = 256  # square letterbox side
    conf: float = 0.25  # default confidence threshold
    iou: float = 0.45  # default NMS IoU threshold
    max_det: int = 100
    # Export parity: every PyTorch box matched by an ONNX box of the same class with at least this IoU.
    export_min_iou: float = 0.9
    export_atol: float = 1e-3  # confidence difference
    export_atol_fp16: float = 2e-2  # TensorRT / fp16 engines
    min_side: int = 32
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "detection"

    @property
    def export_format(self) -> str:
        return "onnx"

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SpeechSpec:
    """A speech recognition task: Whisper fine-tuned for one language, served with a fast backend."""

    name: str
    language: str
    description: str
    synthetic: str  # f(n, seed, held_out) -> (list[float32 16 kHz audio], list[str])
    window_s: int = 30  # Whisper's window: longer audio is transcribed window after window
    # The fast path encodes the audio present, rounded up to this step, rather than a window padded to 30 s (the
    # encoder's cost falls with its input); fine-tuning teaches the model both views.
    context_step_s: int = 5
    base: str = "packaged"  # "packaged" (the Whisper base that ships as a package), a checkpoint path or a name
    sample_rate: int = 16_000
    max_target_tokens: int = 120
    # Export parity: the fast backend's transcripts may differ from PyTorch's by at most this CER (points).
    export_max_cer_diff: float = 1.0
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "speech"

    @property
    def export_format(self) -> str:
        return "ct2"  # CTranslate2, served by faster-whisper

    def context_frames(self, used_frames: int) -> int:
        """Log-mel frames (100 per second) the fast path encodes for a window whose audio fills
        ``used_frames``: rounded up to ``context_step_s``, at most one window."""
        step = self.context_step_s * 100
        return min(self.window_s * 100, max(1, -(-used_frames // step)) * step)

    @property
    def labels(self) -> tuple[str, ...]:
        return ()  # a transcript, not classes


@dataclass(frozen=True)
class TaggerSpec:
    """A token-tagging task: a BERT-like encoder with a B / I / O head; text in, character spans out.

    ``synthetic`` names a generator ``f(n, seed, held_out) -> list[Doc]`` (:mod:`training.datasets.abstracts`).
    Long texts run through overlapping windows of ``max_length`` tokens that share ``stride`` tokens.
    """

    name: str
    description: str
    synthetic: str
    labels: tuple[str, ...] = ("O", "B", "I")
    base: str = "packaged"  # "packaged" (all-MiniLM-L6-v2), "e5" (multilingual-e5-small, vocabulary trimmed to Latin
    # and Hangul pieces; "e5:docs" to the training text only, "e5:full" untrimmed), a local model folder or a name
    max_length: int = 256
    stride: int = 64
    export_atol: float = 1e-3  # max |p_onnx - p_torch| over held-out windows
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "token-tagging"

    @property
    def export_format(self) -> str:
        return "onnx"

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class QASpec:
    """An extractive question-answering task: a BERT-like encoder with a start / end head (optionally a GRU or LSTM
    layer between them); a question and a context in, the answer's span of the context out, or no answer.

    ``synthetic`` names a generator ``f(n, seed, held_out, unanswerable, filler) -> list[Passage]``
    (:mod:`training.datasets.reading`). Contexts longer than a window run through windows of ``max_length``
    tokens (the question included) that share ``stride`` context tokens.
    """

    name: str
    description: str
    synthetic: str
    labels: tuple[str, ...] = ("start", "end")  # the head's two outputs per token
    base: str = "e5"  # as TaggerSpec.base
    head: str = "linear"  # linear | gru | lstm: what sits between the encoder and the start / end logits
    max_length: int = 256
    stride: int = 96
    max_question_tokens: int = 64
    max_answer_tokens: int = 30
    export_atol: float = 1e-3  # max |logit_onnx - logit_torch| over held-out windows
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "question-answering"

    @property
    def export_format(self) -> str:
        return "onnx"


@dataclass(frozen=True)
class PaletteSpec:
    """A colour palette task: image -> ``n`` colours. Methods without training (k-means in CIELAB; k-medians in
    DIN99o, which lowers the mean CIEDE2000 error) and a learned generator (ONNX) share one pixel pipeline.

    ``synthetic`` names a generator ``f(n, seed) -> (images: list[HxWx3 uint8], colours: list[(K, 3) uint8])``: the
    colours planted in each image.
    """

    name: str
    description: str
    synthetic: str
    methods: tuple[str, ...] = ("kmeans", "kmedians", "generator")
    default_method: str = (
        "kmedians"  # the best on held-out real photos (docs/results.md, benchmarks/results/palette-cpu.md)
    )
    min_colors: int = 2
    max_colors: int = 12
    default_colors: int = 5
    thumbnail: int = 256  # longest side the pixels are read at
    fit_pixels: int = 4096  # pixels k-means and the refinement fit on (fixed-seed sample)
    input_size: int = 64  # generator input, squared
    export_atol: float = 0.05  # max |Lab_onnx - Lab_torch| over held-out images, CIELAB units
    min_side: int = 8
    train_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "palette"

    @property
    def export_format(self) -> str:
        return "onnx"

    @property
    def labels(self) -> tuple[str, ...]:
        return ()
