"""Image classification services, one per image-classification task in the registry (``tasks.TASKS``).

``bentoml serve services.image_classifier:Malaria`` (the class is the task's name, capitalised). A new task of this
kind is a registry entry: its service, routes and web panel follow from it. Routes (under ``/v1/<task>``):
``POST /classify`` (one image; adaptive batching across requests), ``POST /classify/batch`` (many images in one
request). Both take multipart uploads or JSON with base64; the single route also takes a raw ``image/*`` body.
Knobs are typed service arguments: ``--arg batching=false``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Literal

import bentoml
import numpy as np
from fastapi import FastAPI, Query, Request
from PIL import Image
from pydantic import BaseModel, Field
from starlette.responses import Response

from services.batching import AdaptiveBatcher
from services.http import (
    ERROR_RESPONSES,
    ErrorResponse,
    decode_off_loop_if_large,
    error_response,
    flag,
    install_error_handlers,
    parse_uploads,
    read_body,
)
from services.lifecycle import CommonArgs, ModelService
from services.metrics import observer, rejected
from services.security import ApiKeyMiddleware
from tasks import TASKS
from tasks.images import ImageLimits, InputError, decode_image, encode_png, preprocess
from tasks.spec import ImageClassifierSpec


class ServiceArgs(CommonArgs):
    """``bentoml serve services.image_classifier:Malaria --arg NAME=VALUE``."""

    model_tag: str = Field("", description="store entry to serve (default: <task>:latest)")
    backend: Literal["auto", "onnx", "pytorch"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batching: bool = Field(True, description="adaptive batching across concurrent requests")
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_delay_ms: float = Field(0.0, ge=0, le=1000, description="extra wait for a fuller batch")
    max_body_mb: float = Field(10.0, gt=0, le=1024)
    max_images: int = Field(256, ge=1, le=10000, description="images per batch request")
    max_pixels: int = Field(25_000_000, ge=1)
    gradcam: bool = Field(True, description="allow Grad-CAM on request (loads the PyTorch model)")
    threads: int = Field(0, ge=0, description="model threads (0: one per core)")


ARGS = bentoml.use_arguments(ServiceArgs)


class GradCAM(BaseModel):
    heatmap_png: str = Field(description="base64 PNG heatmap (blue: ignored, red: decisive), original image size")
    overlay_png: str = Field(description="base64 PNG of the heatmap blended over the image")


class Prediction(BaseModel):
    label: str = Field(description="most probable class (one of the task's labels)")
    probability: float = Field(description="probability of `label`")
    probabilities: dict[str, float] = Field(description="probability per class")
    gradcam: GradCAM | None = Field(None, description="present when requested with gradcam=true")


class ClassifyResponse(Prediction):
    model: str = Field(description="model-store tag that produced the answer")
    backend: str = Field(description="inference backend (onnxruntime or pytorch) and device")
    elapsed_ms: float = Field(description="server time for this request")


class BatchItem(Prediction):
    index: int = Field(description="position of the image in the request")
    filename: str | None = Field(None, description="upload file name, when given")


class BatchResponse(BaseModel):
    results: list[BatchItem]
    model: str
    backend: str
    elapsed_ms: float


def _single_body(many: bool) -> dict:
    field = "images" if many else "image"
    file_schema = {"type": "string", "format": "binary"}
    b64 = {"type": "string", "description": "base64 image (PNG, JPEG, TIFF, BMP)"}
    content = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": [field],
                "properties": {field: {"type": "array", "items": file_schema} if many else file_schema},
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": [field],
                "properties": {
                    field: {"type": "array", "items": b64} if many else b64,
                    "gradcam": {"type": "boolean", "default": False},
                },
            }
        },
    }
    if not many:
        content["image/png"] = {"schema": file_schema}
        content["image/jpeg"] = {"schema": file_schema}
    return {"requestBody": {"required": True, "content": content}}


def make_app(spec: ImageClassifierSpec) -> FastAPI:
    """The task's API: both routes hand the request to the running service."""
    app = FastAPI(title=spec.name, description=spec.description)
    install_error_handlers(app)

    @app.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=_single_body(many=False),
        summary="Classify one image",
    )
    async def classify(
        request: Request, gradcam: bool = Query(False, description="add a Grad-CAM heatmap")
    ) -> Response | BaseModel:
        return await bentoml.get_current_service().handle(request, gradcam, many=False)

    @app.post(
        "/classify/batch",
        response_model=BatchResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=_single_body(many=True),
        summary="Classify many images in one request",
    )
    async def classify_batch(
        request: Request, gradcam: bool = Query(False, description="add Grad-CAM heatmaps")
    ) -> Response | BaseModel:
        return await bentoml.get_current_service().handle(request, gradcam, many=True)

    return app


class ImageClassifier(ModelService):
    """A task's CNN classifier (ONNX Runtime; PyTorch fallback and Grad-CAM); ``spec`` is set per task."""

    spec: ImageClassifierSpec
    model_tag: str  # ``--arg model_tag``, or the task's latest entry

    def load(self) -> None:
        from tasks.store import entry_for_task

        self.args = ARGS
        self.set_body_limit(ARGS.max_body_mb)  # uploads stay in memory: nothing a client sends is written to disk
        entry = entry_for_task(self.spec.name, self.model_tag)
        meta = entry.info.metadata
        self.tag = str(entry.tag)
        self.labels: list[str] = list(meta["labels"])
        self.size = int(meta["input_size"])
        self.mean, self.std = meta["normalization"]["mean"], meta["normalization"]["std"]
        self.limits = ImageLimits(min_side=self.spec.min_side, max_pixels=ARGS.max_pixels)
        from services.backends import load_backend

        self.backend = load_backend(entry, ARGS.backend, ARGS.device, ARGS.threads)
        self.cam_model = None  # fp32 PyTorch model for Grad-CAM, on the backend's device
        if ARGS.gradcam:
            from tasks.classifier import from_checkpoint
            from tasks.store import verified_file

            self.cam_model = from_checkpoint(verified_file(entry, "model.pt")).to(self.backend.device)
        self.backend_name = f"{self.backend.name}/{self.backend.device}"
        self.backend(np.zeros((1, 3, self.size, self.size), np.float32))  # warm-up before reporting ready
        self.batcher = make_batcher(self.backend, ARGS, self.spec.name)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.ready:
            self.batcher.close()

    async def handle(self, request: Request, gradcam: bool, many: bool) -> Response | BaseModel:
        """Validate, decode, classify (through the batcher) and answer one request of either route."""
        start = time.perf_counter()
        try:
            body = await read_body(request, self.body_limit)
            field = "images" if many else "image"
            uploads, extra = await parse_uploads(request, body, field, many, self.args.max_images)
            gradcam = gradcam or flag(extra.get("gradcam", False), "gradcam")
            if gradcam and self.cam_model is None:
                raise InputError("Grad-CAM is disabled on this server (started with gradcam=false)", 400)
            images = []
            for i, upload in enumerate(uploads):
                try:
                    images.append(await decode_off_loop_if_large(decode_image, upload.data, self.limits))
                except InputError as e:
                    if not many:
                        raise
                    name = f" ({upload.filename})" if upload.filename else ""
                    raise InputError(f"images[{i}]{name}: {e}", e.status) from None
        except InputError as e:
            rejected(self.spec.name, e.status)
            return error_response(e)
        if len(images) <= 8:
            x = preprocess(images, self.size, self.mean, self.std)
        else:  # a large batch request must not hold the event loop for long
            x = await asyncio.to_thread(preprocess, images, self.size, self.mean, self.std)
        probs = await self.batcher(x)
        cams = await asyncio.to_thread(self._gradcam, x, probs, images) if gradcam else [None] * len(images)
        preds = [self._prediction(p, c) for p, c in zip(probs, cams, strict=True)]
        elapsed = round((time.perf_counter() - start) * 1000, 3)
        if not many:
            return ClassifyResponse(
                **preds[0].model_dump(), model=self.tag, backend=self.backend_name, elapsed_ms=elapsed
            )
        items = [
            BatchItem(**p.model_dump(), index=i, filename=u.filename)
            for i, (p, u) in enumerate(zip(preds, uploads, strict=True))
        ]
        return BatchResponse(results=items, model=self.tag, backend=self.backend_name, elapsed_ms=elapsed)

    def _prediction(self, p: np.ndarray, cam: GradCAM | None) -> Prediction:
        k = int(p.argmax())
        return Prediction(
            label=self.labels[k],
            probability=float(p[k]),
            probabilities={label: float(v) for label, v in zip(self.labels, p, strict=True)},
            gradcam=cam,
        )

    def _gradcam(self, x: np.ndarray, probs: np.ndarray, images: list[Image.Image]) -> list[GradCAM]:
        import torch

        from tasks.classifier import gradcam, heatmap_rgb, overlay

        xt = torch.from_numpy(x).to(self.backend.device)
        cams = gradcam(self.cam_model, xt, probs.argmax(1).tolist())
        out = []
        for cam, image in zip(cams, images, strict=True):
            full = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize(image.size)) / 255.0
            out.append(
                GradCAM(
                    heatmap_png=base64.b64encode(encode_png(heatmap_rgb(full))).decode(),
                    overlay_png=base64.b64encode(encode_png(overlay(np.asarray(image), full))).decode(),
                )
            )
        return out


def make_batcher(backend: Callable[[np.ndarray], np.ndarray], args: ServiceArgs, task: str) -> AdaptiveBatcher:
    """The batcher for ``backend``; with ``batching=false`` every model call takes one image."""
    size = args.max_batch_size if args.batching else 1
    return AdaptiveBatcher(backend, size, args.max_delay_ms if args.batching else 0.0, observer(task))


def make_service(spec: ImageClassifierSpec):
    """The BentoML service of ``spec``: its own name, routes under ``/v1/<task>``, model and API keys."""
    tag = ARGS.model_tag or f"{spec.name}:latest"
    cls = type(
        spec.name.capitalize(),
        (ImageClassifier,),
        {
            "__doc__": spec.description,
            "spec": spec,
            "task": spec.name,
            "model_tag": tag,
            "model_ref": bentoml.models.BentoModel(tag),
        },
    )
    app = make_app(spec)
    endpoints = {"livez": "/livez", "readyz": "/readyz"}
    svc = bentoml.service(name=spec.name, traffic={"timeout": ARGS.timeout_s}, workers=1, endpoints=endpoints)(
        bentoml.asgi_app(app, path=f"/v1/{spec.name}")(cls)
    )
    svc.add_asgi_middleware(ApiKeyMiddleware)  # optional API keys (services/security.py)
    return svc


# One module-level service per registered task of this kind (BentoML finds a service by its module variable).
for _spec in TASKS.values():
    if _spec.kind == "image-classification":
        globals()[_spec.name.capitalize()] = make_service(_spec)

__all__ = ["ErrorResponse", "ImageClassifier", "make_app", "make_service"]
