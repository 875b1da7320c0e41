"""Colour palette service: ``bentoml serve services.palette:Palette``.

``POST /v1/palette/extract`` takes one image (multipart ``image``, JSON with base64 ``image``, or a raw ``image/*``
body) and answers its palette: ``n_colors`` colours (2..12) as hex, sRGB, CIELAB and share of the pixels, sorted by
share, with a swatch PNG. ``method``: ``kmeans`` (CIELAB baseline), ``kmedians`` (lower CIEDE2000 error) or
``generator`` (the learned generator, ONNX, adaptive batching); the default is the method that measured best on
held-out photos when the served model was built (its store entry says so).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Literal

import bentoml
import numpy as np
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from services.batching import AdaptiveBatcher
from services.http import (
    ERROR_RESPONSES,
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
from tasks import palette as P
from tasks.images import ImageLimits, InputError, decode_image

TASK = get_task("palette")


class ServiceArgs(CommonArgs):
    """``bentoml serve services.palette:Palette --arg NAME=VALUE``."""

    model_tag: str = Field("palette:latest", description="store entry to serve (needs its ONNX export)")
    default_method: Literal["best", "kmeans", "kmedians", "generator"] = Field(
        "best", description="method when a request names none; best: the one the entry measured best"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batching: bool = Field(True, description="adaptive batching of generator calls across requests")
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_delay_ms: float = Field(0.0, ge=0, le=1000)
    max_body_mb: float = Field(20.0, gt=0, le=1024)
    max_pixels: int = Field(25_000_000, ge=1, description="largest image accepted, pixels (413 past it)")
    threads: int = Field(0, ge=0)


ARGS = bentoml.use_arguments(ServiceArgs)


class Colour(BaseModel):
    hex: str = Field(description="#rrggbb")
    rgb: list[int] = Field(description="8-bit sRGB", min_length=3, max_length=3)
    lab: list[float] = Field(description="CIELAB (D65) of the sRGB colour", min_length=3, max_length=3)
    share: float = Field(description="fraction of the image's pixels nearest (CIEDE2000) to this colour")


class PaletteResponse(BaseModel):
    colors: list[Colour] = Field(
        description="largest share first; fewer than n_colors only when the image has fewer distinct colours"
    )
    n_colors: int = Field(description="colours asked for")
    method: str
    swatch_png: str | None = Field(None, description="base64 PNG strip, each colour as wide as its share")
    width: int = Field(description="image width, pixels")
    height: int
    model: str = Field(description="model-store tag")
    backend: str
    elapsed_ms: float


app = FastAPI(title="palette", description=TASK.description)
install_error_handlers(app)

FILE = {"type": "string", "format": "binary"}
BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": FILE}}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "description": "base64 image (PNG, JPEG, TIFF, BMP)"},
                        "n_colors": {"type": "integer", "minimum": TASK.min_colors, "maximum": TASK.max_colors},
                        "method": {"type": "string", "enum": list(TASK.methods)},
                        "swatch": {"type": "boolean"},
                    },
                }
            },
            "image/png": {"schema": FILE},
            "image/jpeg": {"schema": FILE},
        },
    }
}


@app.post(
    "/extract",
    response_model=PaletteResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=BODY_DOC,
    summary="Extract an image's colour palette",
)
async def extract(
    request: Request,
    n_colors: int = Query(TASK.default_colors, ge=TASK.min_colors, le=TASK.max_colors, description="number of colours"),
    method: Literal["kmeans", "kmedians", "generator"] | None = Query(None, description="default: the best"),
    swatch: bool = Query(True, description="include the swatch PNG"),
) -> Response | BaseModel:
    return await bentoml.get_current_service().handle(request, n_colors, method, swatch)


@bentoml.service(
    name="palette", traffic={"timeout": ARGS.timeout_s}, workers=1, endpoints={"livez": "/livez", "readyz": "/readyz"}
)
@bentoml.asgi_app(app, path="/v1/palette")
class Palette(ModelService):
    """Palettes by k-means / k-medians (NumPy) or the learned generator (ONNX Runtime)."""

    model_ref = bentoml.models.BentoModel(ARGS.model_tag)

    task = TASK.name

    def load(self) -> None:
        from services.backends import OnnxBackend
        from tasks.store import entry_for_task, verified_file

        self.set_body_limit(ARGS.max_body_mb)  # uploads stay in memory: nothing a client sends is written to disk
        entry = entry_for_task(TASK.name, ARGS.model_tag)
        if "model.onnx" not in entry.info.metadata.get("files", {}):
            raise FileNotFoundError(f"{entry.tag} has no ONNX export: run `python -m exporters palette --format onnx`")
        self.tag = str(entry.tag)
        measured = entry.info.metadata.get("metrics", {}).get("test", {}).get("best_method", TASK.default_method)
        self.default_method = measured if ARGS.default_method == "best" else ARGS.default_method
        self.limits = ImageLimits(min_side=TASK.min_side, max_pixels=ARGS.max_pixels)
        self.offsets = P.head_offsets(TASK)
        self.runner = OnnxBackend(verified_file(entry, "model.onnx"), ARGS.device, ARGS.threads)
        self.backend = f"numpy+{self.runner.name}/{self.runner.device}"
        size = ARGS.max_batch_size if ARGS.batching else 1
        self.batcher = AdaptiveBatcher(
            self.runner, size, ARGS.max_delay_ms if ARGS.batching else 0.0, observer(TASK.name)
        )
        warm = np.zeros((32, 32, 3), np.uint8)
        self.runner(P.generator_input(warm, TASK)[None])  # warm-up before reporting ready
        P.extract(P.image_pixels(warm, TASK), 2, "kmedians")

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.ready:
            self.batcher.close()

    async def handle(self, request: Request, n_colors: int, method: str | None, swatch: bool) -> Response | BaseModel:
        start = time.perf_counter()
        try:
            body = await read_body(request, self.body_limit)
            uploads, extra = await parse_uploads(request, body, "image", many=False, max_files=1)
            n_colors, method, swatch = self.options(extra, n_colors, method, swatch)
            img, thumb, pixels = await asyncio.to_thread(self.prepare, uploads[0].data)
        except InputError as e:
            rejected(TASK.name, e.status)
            return error_response(e)
        if method == "generator":
            out = await self.batcher(P.generator_input(thumb, TASK)[None])
            colours = out[0, self.offsets[n_colors] : self.offsets[n_colors] + n_colors]
            palette, png = await asyncio.to_thread(self.finish, colours, pixels, swatch)
        else:
            palette, png = await asyncio.to_thread(self.finish, None, pixels, swatch, n_colors, method)
        width, height = img.info["original_size"]
        return PaletteResponse(
            colors=[
                Colour(hex=P.hex_code(rgb), rgb=rgb.tolist(), lab=np.round(lab, 2).tolist(), share=round(float(s), 4))
                for rgb, lab, s in zip(palette.rgb, palette.lab, palette.share, strict=True)
            ],
            n_colors=n_colors,
            method=method,
            swatch_png=png,
            width=width,
            height=height,
            model=self.tag,
            backend=self.backend,
            elapsed_ms=round((time.perf_counter() - start) * 1000, 3),
        )

    def prepare(self, data: bytes):
        """Decode (a JPEG at a reduced scale: every method reads a thumbnail), shrink, sample pixels."""
        img = decode_image(data, self.limits, draft=2 * TASK.thumbnail)
        thumb = P.thumbnail(img, TASK.thumbnail)
        return img, thumb, P.image_pixels(thumb, TASK)

    @staticmethod
    def finish(colours, pixels: np.ndarray, swatch: bool, n: int = 0, method: str = "") -> tuple[P.Palette, str | None]:
        """Fit the palette when ``colours`` is None, then shares, sorting and the swatch: one thread hop."""
        if colours is None:
            colours = P.extract(pixels, n, method)
        palette = P.finish(colours, pixels)
        return palette, base64.b64encode(P.swatch_png(palette)).decode() if swatch else None

    def options(self, extra: dict, n_colors: int, method: str | None, swatch: bool) -> tuple[int, str, bool]:
        """Options from the query, overridden by JSON / form fields, checked."""
        value = extra.get("n_colors", n_colors)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value) < 4:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not TASK.min_colors <= value <= TASK.max_colors:
            raise InputError(f"n_colors must be a whole number from {TASK.min_colors} to {TASK.max_colors}", 422)
        method = extra.get("method", method) or self.default_method
        if method not in TASK.methods:
            raise InputError(f"unknown method {method!r}: choose one of {', '.join(TASK.methods)}", 422)
        return value, method, flag(extra.get("swatch", swatch), "swatch")


Palette.add_asgi_middleware(ApiKeyMiddleware)  # optional API keys (services/security.py)
