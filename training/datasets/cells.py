"""Synthetic blood-smear cell crops in the style of the NIH malaria set.

A red cell on a black background with stain, illumination and focus variation. Parasitized cells carry one to
three parasites inside the cell: ring forms (a thin purple ring with one or two chromatin dots) or trophozoites
(an irregular purple mass with brown pigment). Both classes carry platelets (small purple dots on or beyond the
cell edge) and debris (grey-brown specks, also inside the cell), so that "any dark spot" is not the answer.
"""

from __future__ import annotations

import numpy as np

PARASITIZED, UNINFECTED = 0, 1  # label indices, in the order of tasks.malaria.MALARIA.labels


def _soft(d: np.ndarray, edge: float = 0.8) -> np.ndarray:
    """Signed distance (negative inside) -> soft coverage in [0, 1]."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -30, 30)))


def _paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    img[:] = img * (1 - alpha[..., None]) + colour[None, None, :] * alpha[..., None]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return img
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    tmp = sum(k[i] * pad[i : i + img.shape[0], :, :] for i in range(2 * r + 1))
    return sum(k[i] * tmp[:, i : i + img.shape[1], :] for i in range(2 * r + 1))


def cell_image(rng: np.random.Generator, parasitized: bool) -> np.ndarray:
    """One synthetic cell crop, HxWx3 uint8 (side 90-150 px)."""
    h = int(rng.integers(90, 151))
    w = int(np.clip(h + rng.integers(-12, 13), 80, 160))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)

    # The cell: an irregular ellipse filling most of the crop.
    cy, cx = h / 2 + rng.normal(0, 2), w / 2 + rng.normal(0, 2)
    ry, rx = h * rng.uniform(0.36, 0.46), w * rng.uniform(0.36, 0.46)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + sum(rng.uniform(0, 0.035) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / wobble
    inside = _soft((rho - 1) * min(ry, rx), 1.0)
    stain = np.array([rng.uniform(175, 235), rng.uniform(95, 150), rng.uniform(110, 165)], np.float32)
    pallor = 1 + rng.uniform(0.0, 0.18) * np.exp(-((rho / 0.45) ** 2))  # pale centre of a red cell
    texture = 1 + rng.normal(0, 0.025, (h, w)).astype(np.float32)
    cell = stain[None, None, :] * (pallor * texture)[..., None]
    img = cell * inside[..., None]

    def spot(y: float, x: float, r: float, colour: np.ndarray, irregular: float = 0.0) -> None:
        ang = np.arctan2(yy - y, xx - x)
        rr = r * (1 + irregular * np.sin(3 * ang + rng.uniform(0, 6.3)))
        _paint(img, _soft(np.sqrt((yy - y) ** 2 + (xx - x) ** 2) - rr, 0.7), colour)

    def point_inside(margin: float) -> tuple[float, float]:
        a, m = rng.uniform(0, 2 * np.pi), rng.uniform(0, margin)
        return cy + m * ry * np.sin(a), cx + m * rx * np.cos(a)

    purple = np.array([rng.uniform(80, 135), rng.uniform(30, 75), rng.uniform(130, 190)], np.float32)
    if parasitized:
        for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
            y, x = point_inside(0.7)
            if rng.random() < 0.6:  # ring form: thin ring + chromatin dot(s)
                r = rng.uniform(3.0, 7.0)
                t = rng.uniform(0.9, 1.8)
                d = np.abs(np.sqrt((yy - y) ** 2 + (xx - x) ** 2) - r) - t / 2
                _paint(img, _soft(d, 0.6) * rng.uniform(0.75, 1.0), purple)
                for _ in range(int(rng.integers(1, 3))):
                    a = rng.uniform(0, 2 * np.pi)
                    spot(y + r * np.sin(a), x + r * np.cos(a), rng.uniform(1.3, 2.3), purple * 0.6)
            else:  # trophozoite: irregular mass with brown haemozoin pigment
                r = rng.uniform(4.0, 9.0)
                spot(y, x, r, purple, irregular=0.3)
                for _ in range(int(rng.integers(1, 4))):
                    spot(y + rng.normal(0, r / 3), x + rng.normal(0, r / 3), 1.0, np.array([90, 60, 30.0]))

    # Platelets (both classes): small purple dots on or beyond the cell edge.
    for _ in range(int(rng.choice([0, 0, 1, 2]))):
        a = rng.uniform(0, 2 * np.pi)
        m = rng.uniform(0.95, 1.2)
        spot(cy + m * ry * np.sin(a), cx + m * rx * np.cos(a), rng.uniform(2.0, 4.0), purple * 1.1, 0.2)
    # Debris and stain precipitate (both classes): grey-brown specks, inside the cell too.
    for _ in range(int(rng.choice([0, 0, 1, 2, 3]))):
        y, x = point_inside(1.1)
        grey = rng.uniform(60, 120)
        spot(y, x, rng.uniform(1.0, 3.5), np.array([grey * 1.1, grey * 0.9, grey * 0.7]), 0.4)

    # Illumination gradient, focus, sensor noise.
    gy, gx = rng.normal(0, 0.15, 2)
    img *= (1 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5))[..., None]
    img = _blur(img, rng.uniform(0.0, 1.3))
    img += rng.normal(0, rng.uniform(1.0, 4.0), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """``n`` cell crops, half of each class (shuffled). Labels index ``("Parasitized", "Uninfected")``."""
    rng = np.random.default_rng(seed)
    labels = [PARASITIZED if i % 2 == 0 else UNINFECTED for i in range(n)]
    rng.shuffle(labels)
    return [cell_image(rng, label == PARASITIZED) for label in labels], labels
