"""Colour palette service: ``bentoml serve services.palette:Palette``.

``POST /v1/palette/extract`` takes one image (multipart ``image``, JSON with base64 ``image``, or a raw ``image/*``
body) and answers its palette: ``n_colors`` colours (2..12) as hex, sRGB, CIELAB and share of the pixels, sorted by
share, with a swatch PNG. ``method``: ``kmeans`` (CIELAB baseline), ``kmedians`` (lower CIEDE2000 error) or
``generator`` (the learned generator, ONNX, adaptive batching); the default is the method that measured best on
held-out photos when the served model was built (its store entry says so).
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Files, Options, Prepared, Route, TaskService, make_service
from tasks import get_task
from tasks import palette as P
from tasks.images import Budget, ImageLimits, InputError, decode_image

TASK = get_task("palette")


class ServiceArgs(CommonArgs):
    """``bentoml serve services.palette:Palette --arg NAME=VALUE``."""

    default_method: Literal["best", "kmeans", "kmedians", "generator"] = Field(
        "best", description="method when a request names none; best: the one the entry measured best"
    )
    max_body_mb: float = Field(20.0, gt=0, le=1024, description="largest request body, MiB (413 past it)")
    max_pixels: int = Field(25_000_000, ge=1, description="largest image accepted, pixels (413 past it)")


ARGS = bentoml.use_arguments(ServiceArgs)


class PaletteOptions(Options):
    n_colors: int = Field(TASK.default_colors, ge=TASK.min_colors, le=TASK.max_colors, description="number of colours")
    method: Literal["kmeans", "kmedians", "generator"] | None = Field(
        None, description="kmeans, kmedians or generator; default: the best on held-out photos"
    )
    swatch: bool = Field(True, description="include the swatch PNG")


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


EXTRACT = Route("/extract", "Extract an image's colour palette", Files("image"), PaletteOptions, PaletteResponse)


class PaletteService(TaskService):
    """Palettes by k-means / k-medians (NumPy) or the learned generator (ONNX Runtime)."""

    routes = (EXTRACT,)
    answers_without_model = True  # k-means and k-medians need no trained model: ready before the generator lands

    def load_model(self, entry) -> None:
        from services.backends import OnnxBackend
        from tasks.store import verified_file

        self.limits = ImageLimits(min_side=TASK.min_side, max_pixels=self.args.max_pixels)
        self.offsets = P.head_offsets(TASK)
        self.runner = None
        self.backend_name = "numpy"
        measured = TASK.default_method
        if entry is not None:
            measured = entry.info.metadata.get("metrics", {}).get("test", {}).get("best_method", measured)
            self.runner = OnnxBackend(verified_file(entry, "model.onnx"), self.args.device, self.threads)
            self.backend_name = f"numpy+{self.runner.name}/{self.runner.device}"
        self.default_method = measured if self.args.default_method == "best" else self.args.default_method

    def without_model_note(self) -> str:
        return "k-means and k-medians; the generator method answers once its model is loaded"

    def warm_up(self) -> None:
        warm = np.zeros((32, 32, 3), np.uint8)
        if self.runner is not None:
            self.run(P.generator_input(warm, TASK)[None])
        P.extract(P.image_pixels(warm, TASK), 2, "kmedians")

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.runner(x)

    def prepare(self, route: Route, inputs, options: PaletteOptions, budget: Budget) -> Prepared:
        """Decode (a JPEG at a reduced scale: every method reads a thumbnail), shrink, sample pixels; the clustering
        methods fit here too (they need no model call)."""
        img = decode_image(inputs[0].data, self.limits, draft=2 * TASK.thumbnail, budget=budget)
        thumb = P.thumbnail(img, TASK.thumbnail)
        pixels = P.image_pixels(thumb, TASK)
        method = options.method or self.default_method
        if method == "generator" and self.runner is None:
            raise InputError(f"the generator method needs its model: {self.versions.waiting()}", 503)
        state = {"size": img.info["original_size"], "pixels": pixels, "method": method}
        if method != "generator":
            state["colours"] = P.extract(pixels, options.n_colors, method)
            return Prepared(None, size=0, state=state)
        return Prepared(P.generator_input(thumb, TASK)[None], state=state)

    def finish(self, route: Route, prepared: Prepared, out, options: PaletteOptions) -> dict[str, Any]:
        """Shares, sorting and the swatch."""
        state, n = prepared.state, options.n_colors
        colours = state["colours"] if out is None else out[0, self.offsets[n] : self.offsets[n] + n]
        palette = P.finish(colours, state["pixels"])
        width, height = state["size"]
        return {
            "colors": [
                Colour(hex=P.hex_code(rgb), rgb=rgb.tolist(), lab=np.round(lab, 2).tolist(), share=round(float(s), 4))
                for rgb, lab, s in zip(palette.rgb, palette.lab, palette.share, strict=True)
            ],
            "n_colors": n,
            "method": state["method"],
            "swatch_png": base64.b64encode(P.swatch_png(palette)).decode() if options.swatch else None,
            "width": width,
            "height": height,
        }


Palette = make_service(PaletteService, TASK.name, TASK.description, ARGS)
