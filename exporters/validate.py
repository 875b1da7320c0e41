"""Parity validation: an exported model must agree with PyTorch on real inputs, or the export fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.images import preprocess, to_rgb
from tasks.spec import ImageClassifierSpec, resolve
from training.datasets.folder import IMAGE_SUFFIXES


class ParityError(RuntimeError):
    """The exported model disagrees with PyTorch beyond the task's declared tolerance."""


def validation_images(spec: ImageClassifierSpec, images_dir: str | None, n: int, seed: int) -> list[Image.Image]:
    """Images to validate on: files under ``images_dir`` when given, else held-out generator output."""
    if images_dir:
        paths = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not paths:
            raise FileNotFoundError(f"no images under {images_dir}")
        out = []
        for p in paths:
            with Image.open(p) as im:
                out.append(to_rgb(im).copy())
        return out
    images, _ = resolve(spec.synthetic)(n, seed=seed)
    return [Image.fromarray(im) for im in images]


def model_inputs(spec: ImageClassifierSpec, meta: dict, images: list[Image.Image]) -> np.ndarray:
    """Preprocess with the entry's recorded input size and normalisation -> (N, 3, S, S) float32."""
    norm = meta["normalization"]
    return preprocess(images, meta["input_size"], norm["mean"], norm["std"])


def check_parity(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    atol: float,
    batch_sizes: tuple[int, ...] = (1, 7),
) -> dict:
    """Compare probabilities of ``candidate`` with ``reference`` at several batch sizes (dynamic batch).

    Returns a report; raises :class:`ParityError` when the max absolute difference exceeds ``atol`` or the
    predicted classes differ.
    """
    worst, disagreements = 0.0, 0
    for bs in batch_sizes:
        for start in range(0, len(x), bs):
            xb = x[start : start + bs]
            ref, got = reference(xb), candidate(xb)
            if ref.shape != got.shape:
                raise ParityError(f"output shape {got.shape} differs from PyTorch's {ref.shape}")
            worst = max(worst, float(np.abs(ref - got).max()))
            disagreements += int((ref.argmax(1) != got.argmax(1)).sum())
    report = {
        "max_abs_diff": worst,
        "atol": atol,
        "n_images": len(x),
        "batch_sizes": list(batch_sizes),
        "label_disagreements": disagreements,
    }
    if worst > atol or disagreements:
        raise ParityError(
            f"exported model disagrees with PyTorch: max |dp| = {worst:.3g} (tolerance {atol:g}), "
            f"{disagreements} label disagreements over {len(x)} images"
        )
    return report
