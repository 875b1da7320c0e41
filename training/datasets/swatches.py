"""Palette data: procedurally drawn images with a known (planted) colour set, and scikit-image's colour photos.

Synthetic: each image is painted from K planted colours (2 to 8, at least 15 CIEDE2000 apart) as a background with
shapes (discs, rectangles, stripes, soft blobs), then given the things photos have: a low-frequency lighting
gradient, fine texture and sensor noise. The planted colours are what a 'K colours' palette should find.

Photos: scikit-image ships a few real colour photographs. The scenes are split once: palettes of the held-out
scenes are what docs/results.md and the benchmark report; training never sees them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tasks import palette

TRAIN_PHOTOS = ("chelsea.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "motorcycle_right.png")
HELD_OUT_PHOTOS = ("astronaut.png", "coffee.png", "rocket.jpg", "retina.jpg")


def _planted(rng: np.random.Generator, k: int) -> np.ndarray:
    """k sRGB colours (k, 3) uint8, pairwise at least 15 CIEDE2000 apart."""
    colours: list[np.ndarray] = []
    while len(colours) < k:
        c = rng.integers(0, 256, 3).astype(np.uint8)
        lab = palette.srgb_to_lab(c)
        if all(palette.ciede2000(lab, palette.srgb_to_lab(o)) >= 15 for o in colours):
            colours.append(c)
    return np.stack(colours)


def _mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random shape as a boolean (size, size) mask."""
    yy, xx = np.mgrid[:size, :size] / size
    cy, cx = rng.uniform(0.1, 0.9, 2)
    kind = rng.integers(4)
    if kind == 0:  # disc or ellipse
        ry, rx = rng.uniform(0.08, 0.35, 2)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if kind == 1:  # rectangle
        hy, hx = rng.uniform(0.08, 0.35, 2)
        return (np.abs(yy - cy) < hy) & (np.abs(xx - cx) < hx)
    if kind == 2:  # stripes at an angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.1, 0.3)
        return ((np.cos(angle) * xx + np.sin(angle) * yy) / period) % 1 < rng.uniform(0.2, 0.5)
    # soft blob: thresholded sum of bumps
    field = sum(np.exp(-(((yy - y) ** 2 + (xx - x) ** 2) / 0.01)) for y, x in rng.uniform(0.1, 0.9, (4, 2)))
    return field > 0.5


def swatch_image(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image (size, size, 3) uint8 and its planted colours (K, 3) uint8."""
    k = int(rng.integers(2, 9))
    colours = _planted(rng, k)
    index = np.zeros((size, size), np.int64)
    for i in range(1, k):
        for _ in range(int(rng.integers(1, 3))):
            index[_mask(rng, size)] = i
    for i in range(1, k):  # every planted colour must show: give a missing one a disc of its own
        if not (index == i).any():
            yy, xx = np.mgrid[:size, :size]
            cy, cx = rng.integers(size // 8, size - size // 8, 2)
            index[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2] = i
    img = colours[index].astype(np.float32)
    yy, xx = np.mgrid[:size, :size] / size
    light = 1 + rng.uniform(-0.12, 0.12) * (xx - 0.5) + rng.uniform(-0.12, 0.12) * (yy - 0.5)
    img = img * light[..., None] + rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), colours


def generate(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` synthetic images and their planted colours (see the module docstring)."""
    rng = np.random.default_rng(seed)
    pairs = [swatch_image(rng) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def photo(name: str) -> Image.Image:
    """One of scikit-image's bundled photographs as RGB (a file in the installed package: nothing downloads)."""
    try:
        import skimage
    except ImportError as e:
        raise FileNotFoundError("scikit-image is not installed: `pip install scikit-image` (its photos)") from e
    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed scikit-image")
    with Image.open(path) as img:
        return img.convert("RGB")


def quadrants(img: Image.Image) -> list[Image.Image]:
    """The whole image and its four quadrants: five views of one scene, with different colour balances."""
    w, h = img.size
    boxes = ((0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h))
    return [img, *(img.crop(b) for b in boxes)]


def held_out_photos() -> list[tuple[str, Image.Image]]:
    """The evaluation set: each held-out scene whole and in quadrants (20 images)."""
    views = ("", "-q1", "-q2", "-q3", "-q4")
    return [
        (Path(name).stem + view, im)
        for name in HELD_OUT_PHOTOS
        for view, im in zip(views, quadrants(photo(name)), strict=True)
    ]


def photo_crops(n: int, seed: int = 0, size: int = 96) -> list[np.ndarray]:
    """``n`` random square crops (resized to ``size``) of the training photos, randomly flipped."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(photo(name)) for name in TRAIN_PHOTOS]
    out = []
    for _ in range(n):
        arr = photos[rng.integers(len(photos))]
        h, w = arr.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(arr[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BOX)
        crop = np.asarray(crop)
        out.append(crop[:, ::-1].copy() if rng.random() < 0.5 else crop)
    return out
