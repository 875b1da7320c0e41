"""Synthetic frontal breast thermograms in the style of DMR-IR (a torso against a cold background, false colour).

Skin temperature falls from the trunk's centre to its edges; both breasts are slightly cooler at their lower
curve, with warm superficial vessels and a warm inframammary fold. An abnormal image has a warm region in one
breast that the other does not have (asymmetry is what a reader looks for); normal images carry natural
differences: symmetric warm areas in both breasts, vessels, camera noise, posture and framing.
"""

from __future__ import annotations

import numpy as np

NORMAL, ABNORMAL = 0, 1  # the order of tasks.thermal.THERMAL.labels
SIZE = 128
# a thermal camera's "ironbow" palette: cold black-blue, purple, red, orange, hot yellow-white
IRONBOW = np.array([[0, 0, 20], [60, 0, 120], [170, 20, 110], [235, 90, 20], [255, 200, 40], [255, 255, 220]], float)


def false_colour(t: np.ndarray) -> np.ndarray:
    """Temperatures scaled to [0, 1] -> RGB uint8 through the ironbow palette."""
    pos = np.clip(t, 0, 1) * (len(IRONBOW) - 1)
    i = np.minimum(pos.astype(int), len(IRONBOW) - 2)
    f = (pos - i)[..., None]
    return (IRONBOW[i] * (1 - f) + IRONBOW[i + 1] * f).astype(np.uint8)


def thermogram(rng: np.random.Generator, abnormal: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    cx = 0.5 + rng.normal(0, 0.03)
    half_width = rng.uniform(0.36, 0.44)
    body = 1 / (1 + np.exp(np.clip((np.abs(xx - cx) - half_width) / 0.015, -30, 30)))
    temp = 0.15 + body * (0.55 - 0.25 * ((xx - cx) / half_width) ** 2 + rng.normal(0, 0.03))
    breast_y, spread, r = rng.uniform(0.58, 0.68), rng.uniform(0.17, 0.23), rng.uniform(0.13, 0.17)
    sides = [(breast_y + rng.normal(0, 0.01), cx + s * spread + rng.normal(0, 0.01)) for s in (-1, 1)]
    for by, bx in sides:
        d = np.hypot((yy - by) / 1.1, xx - bx)
        inside = 1 / (1 + np.exp(np.clip((d - r) / 0.01, -30, 30)))
        temp += inside * (rng.uniform(-0.06, 0.0) - 0.08 * np.clip((yy - by) / r, 0, 1))
        fold = np.exp(-(((yy - by - r) / 0.015) ** 2)) * (np.abs(xx - bx) < r)  # warm fold under the breast
        temp += 0.12 * fold
        for _ in range(int(rng.integers(1, 4))):  # superficial vessels: warm meandering lines
            a, phase = rng.uniform(0, np.pi), rng.uniform(0, 6.3)
            u = (yy - by) * np.cos(a) - (xx - bx) * np.sin(a)
            v = (yy - by) * np.sin(a) + (xx - bx) * np.cos(a)
            line = np.exp(-(((u - 0.015 * np.sin(v * 40 + phase)) / 0.006) ** 2)) * (np.abs(v) < r)
            temp += rng.uniform(0.04, 0.09) * line * inside

    def warm_spot(by: float, bx: float, strength: float, size: tuple[float, float]) -> None:
        a, m = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6) * r
        sy, sx, s = by + m * np.sin(a), bx + m * np.cos(a), rng.uniform(*size)
        temp[...] += strength * np.exp(-(((yy - sy) ** 2 + (xx - sx) ** 2) / (2 * s**2)))

    if abnormal:  # a warm region in one breast only, over a breast warmer than the other
        by, bx = sides[int(rng.integers(2))]
        temp += rng.uniform(0.03, 0.08) * (np.hypot((yy - by) / 1.1, xx - bx) < r)
        warm_spot(by, bx, rng.uniform(0.18, 0.32), (0.04, 0.07))
    elif rng.random() < 0.5:  # normal variation: small warm areas in both breasts alike
        strength = rng.uniform(0.06, 0.14)
        for by, bx in sides:
            warm_spot(by, bx, strength * rng.uniform(0.85, 1.15), (0.025, 0.045))
    temp += rng.normal(0, 0.01) + rng.normal(0, rng.uniform(0.005, 0.02), temp.shape)
    return false_colour(temp)


def generate(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """``n`` thermograms, half of each class (shuffled). Labels index ``("normal", "abnormal")``."""
    rng = np.random.default_rng(seed)
    labels = [ABNORMAL if i % 2 == 0 else NORMAL for i in range(n)]
    rng.shuffle(labels)
    return [thermogram(rng, label == ABNORMAL) for label in labels], labels
