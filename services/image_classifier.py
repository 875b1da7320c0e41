"""Image classification services, one per image-classification task in the registry (``tasks.TASKS``).

``bentoml serve services.image_classifier:Malaria`` (the class is the task's name, capitalised). A new task of this
kind is a registry entry: its service, routes and web panel follow from it. Routes (under ``/v1/<task>``):
``POST /classify`` (one image; adaptive batching across requests), ``POST /classify/batch`` (many images in one
request). Both take multipart uploads or JSON with base64; the single route also takes a raw ``image/*`` body.
Knobs are typed service arguments: ``--arg batching=false``.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import bentoml
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Files, Options, Prepared, Route, TaskService, make_service
from tasks import TASKS
from tasks.images import Budget, ImageLimits, InputError, decode_image, encode_png, normalize, resize
from tasks.kinds import kind_of
from tasks.spec import ImageClassifierSpec


class ServiceArgs(CommonArgs):
    """``bentoml serve services.image_classifier:Malaria --arg NAME=VALUE``."""

    backend: Literal["auto", "onnx", "pytorch"] = "auto"
    max_images: int = Field(256, ge=1, le=10000, description="images per batch request")
    max_pixels: int = Field(25_000_000, ge=1, description="largest image, pixels (413 past it)")
    gradcam: bool = Field(True, description="allow Grad-CAM on request (loads the PyTorch model)")


ARGS = bentoml.use_arguments(ServiceArgs)


class ClassifyOptions(Options):
    gradcam: bool = Field(False, description="add a Grad-CAM heatmap of the predicted class")


class GradCAM(BaseModel):
    heatmap_png: str = Field(
        description="base64 PNG heatmap (blue: ignored, red: decisive), at the image's size (scaled down to at "
        "most 2048 px a side: the map itself is as coarse as the model's last feature map)"
    )
    overlay_png: str = Field(description="base64 PNG of the heatmap blended over the image")


class Prediction(BaseModel):
    label: str = Field(description="most probable class (one of the task's labels)")
    probability: float = Field(description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability per class")
    gradcam: GradCAM | None = Field(None, description="present when requested with gradcam=true")


class Served(BaseModel):
    model: str = Field(description="model-store tag that produced the answer")
    backend: str = Field(description="inference backend (onnxruntime or pytorch) and device")
    elapsed_ms: float = Field(description="server time for this request")


class ClassifyResponse(Prediction, Served):
    pass


class BatchItem(Prediction):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(None, description="upload file name, when given")


class BatchResponse(Served):
    results: list[BatchItem]


SINGLE = Route(
    "/classify",
    "Classify one image",
    Files("image", raw_types=("image/png", "image/jpeg", "image/tiff", "image/bmp")),
    ClassifyOptions,
    ClassifyResponse,
)
BATCH = Route(
    "/classify/batch", "Classify many images in one request", Files("images", many=True), ClassifyOptions, BatchResponse
)


class ImageClassifier(TaskService):
    """A task's CNN classifier (ONNX Runtime; PyTorch fallback and Grad-CAM); ``spec`` is set per task."""

    spec: ImageClassifierSpec
    routes = (SINGLE, BATCH)
    requires = ()  # ONNX when exported, else the PyTorch checkpoint (load_backend decides)

    def load_model(self, entry) -> None:
        from services.backends import load_backend

        meta = entry.info.metadata
        self.labels: list[str] = list(meta["labels"])
        self.size = int(meta["input_size"])
        self.mean, self.std = meta["normalization"]["mean"], meta["normalization"]["std"]
        self.limits = ImageLimits(min_side=self.spec.min_side, max_pixels=self.args.max_pixels)
        self.backend = load_backend(entry, self.args.backend, self.args.device, self.threads)
        self.cam_model = None  # fp32 PyTorch model for Grad-CAM (parameters frozen), on the backend's device
        if self.args.gradcam:
            from tasks.classifier import from_checkpoint
            from tasks.store import verified_file

            self.cam_model = from_checkpoint(verified_file(entry, "model.pt")).to(self.backend.device)
        self.backend_name = f"{self.backend.name}/{self.backend.device}"

    def warm_up(self) -> None:
        self.run(np.zeros((1, 3, self.size, self.size), np.float32))

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, classes) probabilities."""
        return self.backend(x)

    def max_files(self) -> int:
        return self.args.max_images

    def prepare(self, route: Route, inputs, options: ClassifyOptions, budget: Budget) -> Prepared:
        """Decode each image and squash it to the model's input at once (the full image is kept only for a
        Grad-CAM overlay): (N, 3, S, S) float32."""
        if options.gradcam and self.cam_model is None:
            raise InputError("Grad-CAM is disabled on this server (started with gradcam=false)", 400)
        many = route is BATCH
        small, kept = [], []
        for i, upload in enumerate(inputs):
            try:
                img = decode_image(upload.data, self.limits, budget=budget)
            except InputError as e:
                if not many:
                    raise
                name = f" ({upload.filename})" if upload.filename else ""
                raise InputError(f"images[{i}]{name}: {e}", e.status) from None
            small.append(resize(img, self.size))
            kept.append(shrunk(img, GRADCAM_MAX_SIDE) if options.gradcam else None)
        x = normalize(np.stack(small), self.mean, self.std)
        names = [u.filename for u in inputs]
        return Prepared(x, len(small), state={"images": kept, "names": names})

    def finish_is_light(self, route: Route, prepared: Prepared, options: ClassifyOptions) -> bool:
        return route is SINGLE and not options.gradcam  # one label and its probabilities

    def finish(self, route: Route, prepared: Prepared, probs: np.ndarray, options: ClassifyOptions) -> dict[str, Any]:
        cams = self.gradcam(prepared.x, probs, prepared.state["images"]) if options.gradcam else [None] * len(probs)
        preds = [self.prediction(p, c) for p, c in zip(probs, cams, strict=True)]
        if route is SINGLE:
            return preds[0]
        names = prepared.state["names"]
        return {"results": [{**p, "index": i, "filename": names[i]} for i, p in enumerate(preds)]}

    def prediction(self, p: np.ndarray, cam: GradCAM | None) -> dict[str, Any]:
        k = int(p.argmax())
        return {
            "label": self.labels[k],
            "probability": float(p[k]),
            "probabilities": {label: float(v) for label, v in zip(self.labels, p, strict=True)},
            "gradcam": cam,
        }

    def gradcam(self, x: np.ndarray, probs: np.ndarray, images: list[Image.Image]) -> list[GradCAM]:
        """Grad-CAM of each image's predicted class, at the image's own size up to ``GRADCAM_MAX_SIDE`` (no state
        shared between calls). The map is coloured at the model's resolution and scaled up in 8 bits, and PNGs are
        written from the images themselves: a 25 Mpx upload costs a few 4 Mpx copies, not float arrays of it."""
        import torch

        from tasks.classifier import gradcam, heatmap_rgb

        cams = gradcam(self.cam_model, torch.from_numpy(x).to(self.backend.device), probs.argmax(1).tolist())
        out = []
        for cam, image in zip(cams, images, strict=True):
            heat = Image.fromarray(heatmap_rgb(cam)).resize(image.size, Image.Resampling.BILINEAR)
            out.append(
                GradCAM(
                    heatmap_png=base64.b64encode(encode_png(heat)).decode(),
                    overlay_png=base64.b64encode(encode_png(Image.blend(image, heat, 0.45))).decode(),
                )
            )
        return out


GRADCAM_MAX_SIDE = 2048  # the heatmap is a few cells of the last feature map: more pixels would add only bytes


def shrunk(img: Image.Image, side: int) -> Image.Image:
    """``img`` scaled down (aspect kept) so that neither side passes ``side``; ``img`` itself if it fits."""
    if max(img.size) <= side:
        return img
    scale = side / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


# One module-level service per registered task of this kind (BentoML finds a service by its module variable).
for _spec in TASKS.values():
    if kind_of(_spec).service == __name__:
        globals()[_spec.name.capitalize()] = make_service(
            ImageClassifier, _spec.name, _spec.description, ARGS, spec=_spec
        )

__all__ = ["ImageClassifier"]
