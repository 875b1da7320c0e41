"""The kind registry: what every stage does with a task of a kind, declared once per kind.

A task (``tasks.TASKS``) is configuration; its kind (``spec.kind``) says which code trains, stores, exports, serves,
benchmarks and deploys it. Every stage looks the kind up here (:func:`kind_of`) instead of branching on its name,
so a new kind is one :class:`Kind` entry in :data:`KINDS` plus the modules it names, and a new task of an existing
kind is one spec. Compare optimum's ``TasksManager`` (task -> exporter config per backend) and roboflow/inference's
model registry (model type -> class).

Everything is a dotted string ``"package.module:attribute"`` resolved when a stage needs it
(:func:`tasks.spec.resolve`), so importing this module imports no framework.

What the names point at (shapes and signatures every kind keeps):

- ``trainer``: ``train(spec, cfg: TrainConfig) -> result`` with ``result.metrics`` and ``result.cleanup()``.
- ``store_writer``: ``save(spec, result, cfg) -> tag`` (``training/store.py``).
- ``exporters``: format -> ``export(spec, entry, n: int, images: str | None) -> report`` (``exporters/by_kind.py``):
  adds the file to the store entry after its parity check; ``images`` is a folder of real validation inputs.
- ``service``: the module whose class ``<Task>`` (the task's name, capitalised) is the BentoML service.
- ``benchmark``: the module with ``floor_rows`` and ``summary`` (``benchmarks/<kind>.py``); ``benchmark_run``:
  ``run(kind, spec, entry, args, concurrencies, requests, model_arg) -> (rows, notes)`` (``benchmarks/by_kind.py``).
- ``sample.bodies``: ``f(spec[, n]) -> list[bytes]``, request bodies as a client sends them to ``sample.route``.
- ``panel``: ``f(spec) -> dict``, what the web page needs beyond name and kind (``/tasks.json``), or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tasks.spec import resolve


@dataclass(frozen=True)
class Sample:
    """How a client calls the kind's main route: the benchmarks, the soak and the gateway comparison send these."""

    route: str  # under /v1/<task>/
    bodies: str  # dotted f(spec[, n]) -> list[bytes]
    content_type: str  # of each body (of the file part, for multipart)
    field: str | None = None  # multipart form field that carries the body; None: the body is sent raw
    gateway_n: int | None = None  # bodies the gateway benchmark cycles through (None: the function's default)
    request_divisor: int = 1  # the gateway benchmark sends 1/divisor of its request count (slow requests)

    def make(self, spec: Any, n: int | None = None) -> list[bytes]:
        """The request bodies for ``spec``: ``n`` of them, or the sample function's default number."""
        fn = resolve(self.bodies)
        return fn(spec) if n is None else fn(spec, n)


@dataclass(frozen=True)
class Deploy:
    """What a task's Kubernetes Deployment asks for (``python -m k8s.generate``). ``cpu_limit`` is the CPU quota
    the service's threads are sized from (the container's cgroup ``cpu.max``): nothing else sets thread counts."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    startup_s: int = 180  # model load and warm-up before liveness applies (a multiple of 5 s, the probe period)
    gpu: bool = True  # the gpu overlay gives it a GPU (a kind whose service runs its model on CUDA)
    min_replicas: int = 2
    max_replicas: int = 8


@dataclass(frozen=True, eq=False)  # identity: one entry per kind
class Kind:
    """One kind of task, declared once: every stage looks its part up here."""

    name: str  # what spec.kind returns
    spec: str  # the spec class
    trainer: str
    store_writer: str
    exporters: Mapping[str, str]  # format -> export function, in the order the formats are offered
    default_format: str  # the format the demo build exports and the service serves (spec.export_format)
    service: str  # module of the BentoML services; the class is the task's name, capitalised
    benchmark: str  # module of the in-process floor (floor_rows, summary)
    sample: Sample
    benchmark_run: str = "benchmarks.by_kind:run"
    bench_requests: int = 400  # requests per service row of `python -m benchmarks`
    bench_concurrency: str = "1,8,32"  # client concurrencies of `python -m benchmarks`
    reported_metrics: tuple[str, ...] = ("n",)  # test metrics `python -m training` prints, in this order
    panel: str | None = None  # dotted f(spec) -> dict for /tasks.json
    deploy: Deploy = field(default_factory=Deploy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "exporters", MappingProxyType(dict(self.exporters)))
        if self.default_format not in self.exporters:
            raise ValueError(f"kind {self.name}: default format {self.default_format!r} has no exporter")

    def service_target(self, task: str) -> str:
        """``task``'s service as ``bentoml serve`` takes it: ``<module>:<Task>``."""
        return f"{self.service}:{task.capitalize()}"


def image_panel(spec: Any) -> dict:
    """An image classifier's web-page panel comes from its registry entry."""
    title = spec.title or spec.name
    return {
        "title": title,
        "heading": spec.heading or title,
        "labels": list(spec.labels),
        "positive_label": spec.positive_label,
    }


IMAGE_CLASSIFICATION = Kind(
    name="image-classification",
    spec="tasks.spec:ImageClassifierSpec",
    trainer="training.classifier:train",
    store_writer="training.store:save_classifier",
    exporters={"onnx": "exporters.by_kind:classifier_onnx", "tensorrt": "exporters.by_kind:classifier_tensorrt"},
    default_format="onnx",
    service="services.image_classifier",
    benchmark="benchmarks.image_classifier",
    sample=Sample("classify", "benchmarks.image_classifier:sample_images", "image/png", field="image", gateway_n=16),
    reported_metrics=("n", "accuracy", "precision", "recall", "f1", "roc_auc"),
    panel="tasks.kinds:image_panel",
)

DETECTION = Kind(
    name="detection",
    spec="tasks.spec:DetectorSpec",
    trainer="training.detector:train",
    store_writer="training.store:save_detector",
    exporters={"onnx": "exporters.by_kind:detector_onnx", "tensorrt": "exporters.by_kind:detector_tensorrt"},
    default_format="onnx",
    service="services.tumor",
    benchmark="benchmarks.detector",
    sample=Sample("detect", "benchmarks.detector:sample_images", "image/png", field="image", gateway_n=8),
    reported_metrics=("n", "precision", "recall", "map50", "map50_95"),
)

SPEECH = Kind(
    name="speech",
    spec="tasks.spec:SpeechSpec",
    trainer="training.asr:train",
    store_writer="training.store:save_speech",
    exporters={"ct2": "exporters.by_kind:speech_ct2"},
    default_format="ct2",
    service="services.asr",
    benchmark="benchmarks.speech",
    benchmark_run="benchmarks.by_kind:run_speech",
    sample=Sample("transcribe", "benchmarks.by_kind:speech_wavs", "audio/wav", gateway_n=4, request_divisor=10),
    bench_requests=48,
    bench_concurrency="1,4",
    reported_metrics=("n", "zero_shot", "fine_tuned", "real_text"),
    deploy=Deploy(cpu_request="2", cpu_limit="4", memory_request="2Gi", memory_limit="4Gi", startup_s=300),
)

TOKEN_TAGGING = Kind(
    name="token-tagging",
    spec="tasks.spec:TaggerSpec",
    trainer="training.tagger:train",
    store_writer="training.store:save_tagger",
    exporters={"onnx": "exporters.by_kind:tagger_onnx"},
    default_format="onnx",
    service="services.keyphrase",
    benchmark="benchmarks.tagger",
    sample=Sample("extract", "benchmarks.tagger:sample_texts", "text/plain; charset=utf-8", gateway_n=16),
    reported_metrics=("n", "tagger", "yake", "keybert"),
)

PALETTE = Kind(
    name="palette",
    spec="tasks.spec:PaletteSpec",
    trainer="training.palette:train",
    store_writer="training.store:save_palette",
    exporters={"onnx": "exporters.by_kind:palette_onnx"},
    default_format="onnx",
    service="services.palette",
    benchmark="benchmarks.palette",
    sample=Sample("extract", "benchmarks.palette:sample_images", "image/jpeg"),
    reported_metrics=("n", "photos", "best_method"),
    # the default method is NumPy on the CPU: no GPU, less memory, a quick start
    deploy=Deploy(memory_request="512Mi", memory_limit="1Gi", startup_s=120, gpu=False),
)

QUESTION_ANSWERING = Kind(
    name="question-answering",
    spec="tasks.spec:QASpec",
    trainer="training.qa:train",
    store_writer="training.store:save_qa",
    exporters={"onnx": "exporters.by_kind:qa_onnx"},
    default_format="onnx",
    service="services.qa",
    benchmark="benchmarks.qa",
    sample=Sample("answer", "benchmarks.qa:sample_bodies", "application/json", gateway_n=16),
    reported_metrics=("n", "test", "real_filler"),
)

KINDS: dict[str, Kind] = {
    k.name: k for k in (IMAGE_CLASSIFICATION, DETECTION, SPEECH, TOKEN_TAGGING, PALETTE, QUESTION_ANSWERING)
}


def kind_of(spec: Any) -> Kind:
    """The kind of a task spec; fails with the known kinds, or when the spec is not of its kind's spec class."""
    try:
        kind = KINDS[spec.kind]
    except KeyError:
        raise KeyError(f"task {spec.name!r} has unknown kind {spec.kind!r}; known kinds: {', '.join(KINDS)}") from None
    if not isinstance(spec, resolve(kind.spec)):
        raise TypeError(f"task {spec.name!r}: a {kind.name} task is a {kind.spec.partition(':')[2]}")
    return kind


def export_formats() -> tuple[str, ...]:
    """Every format some kind exports to, in the order the kinds offer them."""
    return tuple(dict.fromkeys(fmt for kind in KINDS.values() for fmt in kind.exporters))
