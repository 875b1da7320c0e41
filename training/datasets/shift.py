"""A shifted held-out set: the usual held-out images with stain, illumination, focus or scale pushed outside the
ranges that training saw, to measure what a model does when the lab, the scanner or the camera changes.

Training sees the generators' own ranges plus augmentation (flips, right-angle turns, one brightness gain in
0.85-1.15 and an offset of +-15 for all channels together; training/classifier.py). Each shift goes past them:

- ``stain``: every colour channel scaled on its own by 0.72-0.82 or 1.18-1.28 (a different stain batch or
  white balance; training never scales channels apart);
- ``illumination``: one gain of 0.60-0.72 or 1.28-1.40 for the whole image, and a gradient of +-20 % across it;
- ``blur``: a Gaussian of sigma 1.2-1.8 pixels at the model's input size (the generators blur up to about 1);
- ``scale``: magnified 1.3-1.5 times about the centre (another objective or distance).

Which shifts apply is the task's choice (``ImageClassifierSpec.shifts``); each image gets all of them, with its
own draw, from a seed of its own, so the set is the same in every run.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

SHIFTS = ("stain", "illumination", "blur", "scale")


def _outside(rng: np.random.Generator, low: tuple[float, float], high: tuple[float, float], size=None):
    """A draw from ``low`` or ``high`` with equal chance (a shift in either direction)."""
    pick = rng.random(size) < 0.5
    return np.where(pick, rng.uniform(*low, size), rng.uniform(*high, size))


def shift_one(im: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """One (S, S, 3) uint8 image with every shift in ``kinds`` applied."""
    x = im.astype(np.float32)
    if "stain" in kinds:
        x *= _outside(rng, (0.72, 0.82), (1.18, 1.28), 3)[None, None, :]
    if "illumination" in kinds:
        w = x.shape[1]
        ramp = np.linspace(-0.2, 0.2, w)[None, :] * rng.choice([-1.0, 1.0])
        x *= (_outside(rng, (0.60, 0.72), (1.28, 1.40)) * (1 + ramp))[..., None]
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if "blur" in kinds:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 1.8))))
    if "scale" in kinds:
        s, zoom = out.width, float(rng.uniform(1.3, 1.5))
        crop = s / zoom
        box = ((s - crop) / 2, (s - crop) / 2, (s + crop) / 2, (s + crop) / 2)
        out = out.resize((s, s), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out, np.uint8)


def shifted(images: np.ndarray, kinds: tuple[str, ...], seed: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> the same images shifted (see the module's description)."""
    if unknown := sorted(set(kinds) - set(SHIFTS)):
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(SHIFTS)}")
    rng = np.random.default_rng(seed)
    return np.stack([shift_one(im, kinds, rng) for im in images])
