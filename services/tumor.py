"""Brain-tumour detection service: ``bentoml serve services.tumor:Tumor``.

``POST /v1/tumor/detect`` takes one MRI slice: PNG / JPEG / TIFF / BMP, DICOM, or NIfTI (``.nii`` / ``.nii.gz``,
with ``slice_index`` for a volume), as a multipart upload, a raw body or JSON with base64. It runs the exported
ONNX model with the suite's own letterbox and NMS (no ultralytics at serving time) behind adaptive batching.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import bentoml
import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Files, Options, Prepared, Route, TaskService, make_service
from tasks import get_task
from tasks.detection import letterbox, postprocess, to_input
from tasks.images import Budget, ImageLimits, decode_image
from tasks.medical import decode_dicom, decode_nifti, is_dicom, is_nifti

TASK = get_task("tumor")
RAW_TYPES = ("image/", "application/dicom", "application/octet-stream", "application/gzip")


class ServiceArgs(CommonArgs):
    """``bentoml serve services.tumor:Tumor --arg NAME=VALUE``."""

    max_batch_size: int = Field(16, ge=1, le=256, description="slices per model call")
    max_body_mb: float = Field(64.0, gt=0, le=2048, description="DICOM and NIfTI volumes are large")
    max_pixels: int = Field(25_000_000, ge=1, description="largest slice, pixels (413 past it)")


ARGS = bentoml.use_arguments(ServiceArgs)


class DetectOptions(Options):
    conf: float = Field(TASK.conf, ge=0.0, le=1.0, description="confidence threshold")
    iou: float = Field(TASK.iou, ge=0.0, le=1.0, description="NMS IoU threshold")
    slice_index: int | None = Field(None, ge=0, description="slice of a DICOM / NIfTI volume")
    annotate: bool = Field(False, description="add a PNG with the boxes drawn")


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


DETECT = Route(
    "/detect",
    "Detect brain tumours in one MRI slice",
    Files("image", raw_types=RAW_TYPES, description="PNG, JPEG, TIFF, BMP, DICOM or NIfTI (.nii / .nii.gz) file"),
    DetectOptions,
    DetectResponse,
)


class Detector(TaskService):
    """YOLO brain-tumour detector (ONNX Runtime, own letterbox and NMS)."""

    routes = (DETECT,)

    def load_model(self, entry) -> None:
        import nibabel  # noqa: F401 - imported now so that the first DICOM / NIfTI request does not pay for it
        import pydicom  # noqa: F401

        from services.backends import OnnxBackend
        from tasks.store import verified_file

        meta = entry.info.metadata
        self.labels = list(meta["labels"])
        self.size = int(meta["input_size"])
        self.limits = ImageLimits(min_side=TASK.min_side, max_pixels=self.args.max_pixels)
        self.backend = OnnxBackend(verified_file(entry, "model.onnx"), self.args.device, self.threads)
        self.backend_name = f"{self.backend.name}/{self.backend.device}"

    def warm_up(self) -> None:
        self.run(np.zeros((1, 3, self.size, self.size), np.float32))

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.backend(x)

    def prepare(self, route: Route, inputs, options: DetectOptions, budget: Budget) -> Prepared:
        """Decode one slice, letterbox it: (1, 3, S, S) float32."""
        gray, fmt = self.decode(inputs[0].data, options.slice_index, budget)
        fitted, info = letterbox(gray, self.size)
        return Prepared(
            to_input([fitted]), state={"info": info, "fmt": fmt, "gray": gray if options.annotate else None}
        )

    def finish(self, route: Route, prepared: Prepared, raw: np.ndarray, options: DetectOptions) -> dict[str, Any]:
        """Boxes back in the slice's pixels, most confident first; the annotated PNG when asked for."""
        info, fmt = prepared.state["info"], prepared.state["fmt"]
        det = postprocess(raw, [info], options.conf, options.iou, TASK.max_det)[0]
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
        return {
            "boxes": boxes,
            "width": info.width,
            "height": info.height,
            "input_format": fmt,
            "slice_index": options.slice_index if fmt in ("dicom", "nifti") else None,
            "annotated_png": _annotate(prepared.state["gray"], boxes) if options.annotate else None,
        }

    def decode(self, data: bytes, slice_index: int | None, budget: Budget) -> tuple[np.ndarray, str]:
        """Bytes -> (HxW uint8 slice, format). The format is read from the bytes, not the content type."""
        if is_dicom(data):
            return decode_dicom(data, slice_index, self.limits, budget=budget), "dicom"
        if data and is_nifti(data):
            nifti = decode_nifti(data, slice_index, self.limits, max_bytes=4 * self.body_limit, budget=budget)
            return nifti, "nifti"
        img = decode_image(data, self.limits, gray=True, budget=budget)  # PNG, JPEG, TIFF, BMP; 4xx otherwise
        return np.asarray(img), img.info["format"].lower()


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


Tumor = make_service(Detector, TASK.name, TASK.description, ARGS)
