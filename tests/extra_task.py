"""A task that exists only in the tests: ``texture``, an image classifier of stripes vs dots (64x64).

Nothing in the repository's registry names it. A test registers it with ``tasks.register(TEXTURE)`` in its own
process, or sets ``SUITE_TASK_MODULES=tests.extra_task`` for the processes it starts (training, export, the
server, the manifest generator), which then register ``TASKS``. Importing this module registers nothing.
"""

from __future__ import annotations

import numpy as np

from tasks.spec import ImageClassifierSpec

SIZE = 64
STRIPES, DOTS = 0, 1  # the order of TEXTURE.labels

TEXTURE = ImageClassifierSpec(
    name="texture",
    labels=("stripes", "dots"),
    description="A 64x64 texture -> stripes or dots (a test-only task of the image-classification kind).",
    synthetic="tests.extra_task:generate",
    title="Texture",
    heading="Textures: stripes or dots",
    backbone="mobilenet_v2",
    positive_label="dots",  # binary tasks report precision / recall / AUC of one class
    input_size=SIZE,
    train_defaults={"synthetic": 96, "epochs": 1, "batch_size": 16},
)
TASKS = (TEXTURE,)


def texture(rng: np.random.Generator, label: int) -> np.ndarray:
    """One image (SIZE, SIZE, 3) uint8: stripes at a random angle and period, or a jittered grid of dots, in two
    random colours with camera noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period = rng.uniform(6, 14)
    if label == STRIPES:
        a = rng.uniform(0, np.pi)
        mask = np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period + rng.uniform(0, 6.3)) > 0
    else:
        ox, oy = rng.uniform(0, period, 2)
        dx = (xx - ox) % period - period / 2
        dy = (yy - oy) % period - period / 2
        mask = np.hypot(dx, dy) < period * rng.uniform(0.2, 0.32)
    fg, bg = rng.integers(0, 256, (2, 3))
    img = np.where(mask[..., None], fg, bg).astype(np.float32) + rng.normal(0, 8, (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """``n`` images, half of each label, shuffled (the image-classification generator shape)."""
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.permutation(np.arange(n) % 2)]
    return [texture(rng, label) for label in labels], labels
