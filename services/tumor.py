"""Brain-tumour detection service: ``bentoml serve services.tumor:Tumor``.

``POST /v1/tumor/detect`` takes one MRI slice: PNG / JPEG / TIFF / BMP, DICOM, or NIfTI (``.nii`` / ``.nii.gz``,
with ``slice_index`` for a volume), as a multipart upload, a raw body or JSON with base64. It runs the exported
ONNX model with the suite's own letterbox and NMS (no ultralytics at serving time) behind adaptive batching.
"""

from __future__ import annotations

import base64
import io
import time
from typing import Literal

import bentoml
import numpy as np
from fastapi import FastAPI, Query, Request
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field
from starlette.responses import Response

from services.batching import AdaptiveBatcher
from services.http import (
    ERROR_RESPONSES,
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
from tasks import get_task
from tasks.detection import letterbox, postprocess, to_input
from tasks.images import ImageLimits, InputError, decode_image
from tasks.medical import decode_dicom, decode_nifti, is_dicom, is_nifti

TASK = get_task("tumor")
RAW_TYPES = ("image/", "application/dicom", "application/octet-stream", "application/gzip")


class ServiceArgs(CommonArgs):
    """``bentoml serve services.tumor:Tumor --arg NAME=VALUE``."""

    model_tag: str = Field("tumor:latest", description="store entry to serve (needs its ONNX export)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batching: bool = Field(True, description="adaptive batching across concurrent requests")
    max_batch_size: int = Field(16, ge=1, le=256)
    max_delay_ms: float = Field(0.0, ge=0, le=1000)
    max_body_mb: float = Field(64.0, gt=0, le=2048, description="DICOM and NIfTI volumes are large")
    max_pixels: int = Field(25_000_000, ge=1)
    threads: int = Field(0, ge=0)


ARGS = bentoml.use_arguments(ServiceArgs)


class Box(BaseModel):
    x0: float = Field(description="left edge, original image pixels")
    y0: float = Field(description="top edge, original image pixels")
    x1: float = Field(description="right edge, original image pixels")
    y1: float = Field(description="bottom edge, original image pixels")
    label: str = Field(description="meningioma, glioma or pituitary")
    class_id: int
    confidence: float


class DetectResponse(BaseModel):
    boxes: list[Box] = Field(description="detections, most confident first")
    width: int = Field(description="width of the slice as decoded, pixels")
    height: int = Field(description="height of the slice as decoded, pixels")
    input_format: str = Field(description="png, jpeg, tiff, bmp, dicom or nifti")
    slice_index: int | None = Field(None, description="slice used from a volume")
    annotated_png: str | None = Field(None, description="base64 PNG with the boxes drawn, when annotate=true")
    model: str = Field(description="model-store tag that produced the answer")
    backend: str
    elapsed_ms: float


def _body_doc() -> dict:
    binary = {"type": "string", "format": "binary"}
    content = {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": binary}}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "description": "base64 PNG, JPEG, DICOM or NIfTI"}},
            }
        },
        "application/dicom": {"schema": binary},
        "application/octet-stream": {"schema": binary, "description": "NIfTI (.nii or .nii.gz)"},
        "image/png": {"schema": binary},
    }
    return {"requestBody": {"required": True, "content": content}}


app = FastAPI(title="tumor", description=TASK.description)
install_error_handlers(app)


@app.post(
    "/detect",
    response_model=DetectResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(),
    summary="Detect brain tumours in one MRI slice",
)
async def detect(
    request: Request,
    conf: float = Query(TASK.conf, ge=0.0, le=1.0, description="confidence threshold"),
    iou: float = Query(TASK.iou, ge=0.0, le=1.0, description="NMS IoU threshold"),
    slice_index: int | None = Query(None, ge=0, description="slice of a DICOM / NIfTI volume"),
    annotate: bool = Query(False, description="add a PNG with the boxes drawn"),
) -> Response | BaseModel:
    return await bentoml.get_current_service().handle(request, conf, iou, slice_index, annotate)


@bentoml.service(
    name="tumor", traffic={"timeout": ARGS.timeout_s}, workers=1, endpoints={"livez": "/livez", "readyz": "/readyz"}
)
@bentoml.asgi_app(app, path="/v1/tumor")
class Tumor(ModelService):
    """YOLO brain-tumour detector (ONNX Runtime, own letterbox and NMS)."""

    model_ref = bentoml.models.BentoModel(ARGS.model_tag)

    task = TASK.name

    def load(self) -> None:
        import nibabel  # noqa: F401 - imported now so that the first DICOM / NIfTI request does not pay for it
        import pydicom  # noqa: F401

        from services.backends import OnnxBackend
        from tasks.store import entry_for_task, verified_file

        self.set_body_limit(ARGS.max_body_mb)  # uploads stay in memory: nothing a client sends is written to disk
        entry = entry_for_task(TASK.name, ARGS.model_tag)
        meta = entry.info.metadata
        if "model.onnx" not in meta.get("files", {}):
            raise FileNotFoundError(f"{entry.tag} has no ONNX export: run `python -m exporters tumor --format onnx`")
        self.tag = str(entry.tag)
        self.labels = list(meta["labels"])
        self.size = int(meta["input_size"])
        self.limits = ImageLimits(min_side=TASK.min_side, max_pixels=ARGS.max_pixels)
        self.backend = OnnxBackend(verified_file(entry, "model.onnx"), ARGS.device, ARGS.threads)
        self.backend_name = f"{self.backend.name}/{self.backend.device}"
        self.backend(np.zeros((1, 3, self.size, self.size), np.float32))  # warm-up before reporting ready
        size = ARGS.max_batch_size if ARGS.batching else 1
        self.batcher = AdaptiveBatcher(
            self.backend, size, ARGS.max_delay_ms if ARGS.batching else 0.0, observer(TASK.name)
        )

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.ready:
            self.batcher.close()

    async def handle(
        self, request: Request, conf: float, iou: float, slice_index: int | None, annotate: bool
    ) -> Response | BaseModel:
        """Decode one slice, detect through the batcher, map boxes back to the slice's pixels."""
        start = time.perf_counter()
        try:
            body = await read_body(request, self.body_limit)
            uploads, extra = await parse_uploads(request, body, "image", False, 1, RAW_TYPES)
            annotate = annotate or flag(extra.get("annotate", False), "annotate")
            slice_index = _int_option(extra.get("slice_index", slice_index), "slice_index")
            data = uploads[0].data
            gray, fmt = await decode_off_loop_if_large(self.decode, data, slice_index)
        except InputError as e:
            rejected(TASK.name, e.status)
            return error_response(e)
        fitted, info = letterbox(gray, self.size)
        raw = await self.batcher(to_input([fitted]))
        det = postprocess(raw, [info], conf, iou, TASK.max_det)[0]
        boxes = [
            Box(
                x0=float(b[0]),
                y0=float(b[1]),
                x1=float(b[2]),
                y1=float(b[3]),
                label=self.labels[int(c)],
                class_id=int(c),
                confidence=float(s),
            )
            for b, s, c in zip(det.boxes, det.scores, det.classes, strict=True)
        ]
        return DetectResponse(
            boxes=boxes,
            width=info.width,
            height=info.height,
            input_format=fmt,
            slice_index=slice_index if fmt in ("dicom", "nifti") else None,
            annotated_png=_annotate(gray, boxes) if annotate else None,
            model=self.tag,
            backend=self.backend_name,
            elapsed_ms=round((time.perf_counter() - start) * 1000, 3),
        )

    def decode(self, data: bytes, slice_index: int | None) -> tuple[np.ndarray, str]:
        """Bytes -> (HxW uint8 slice, format). The format is read from the bytes, not the content type."""
        if is_dicom(data):
            return decode_dicom(data, slice_index, self.limits), "dicom"
        if data and is_nifti(data):
            return decode_nifti(data, slice_index, self.limits, max_bytes=4 * self.body_limit), "nifti"
        img = decode_image(data, self.limits, gray=True)  # PNG, JPEG, TIFF, BMP; 4xx otherwise
        return np.asarray(img), img.info["format"].lower()


def _int_option(value: object, name: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise InputError(f"{name} must be a non-negative whole number", 400)


COLOURS = {"meningioma": (255, 80, 80), "glioma": (80, 255, 80), "pituitary": (80, 200, 255)}


def _annotate(gray: np.ndarray, boxes: list[Box]) -> str:
    img = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(img)
    for b in boxes:
        colour = COLOURS.get(b.label, (255, 255, 0))
        draw.rectangle([b.x0, b.y0, b.x1, b.y1], outline=colour, width=2)
        draw.text((b.x0 + 2, max(0, b.y0 - 12)), f"{b.label} {b.confidence:.2f}", fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


Tumor.add_asgi_middleware(ApiKeyMiddleware)  # optional API keys (services/security.py)
