"""Synthetic H&E prostate tissue tiles, graded benign / Gleason grade 3 / 4 / 5.

Pink stroma (eosin) with scattered purple nuclei (haematoxylin); glands are a pale lumen inside a ring of
epithelium whose nuclei sit along the gland's edge. Gland regularity degrades with grade, as in the Gleason
patterns: benign tissue has a few large round glands with folded edges; grade 3 many small, separate, round
glands; grade 4 fused, irregular glands with several small lumina (cribriform); grade 5 no glands, only sheets and
cords of crowded, larger nuclei. Stain colour, nucleus size, blur and noise vary in every class.
"""

from __future__ import annotations

import numpy as np

LABELS = ("benign", "grade3", "grade4", "grade5")  # the order of tasks.histopathology.HISTOPATHOLOGY.labels
SIZE = 128


def _stamp(img: np.ndarray, y: float, x: float, r: float, colour: np.ndarray, alpha: float = 1.0) -> None:
    """Paint a soft disc in place, touching only its neighbourhood."""
    h, w, _ = img.shape
    y0, y1, x0, x1 = int(max(0, y - r - 2)), int(min(h, y + r + 3)), int(max(0, x - r - 2)), int(min(w, x + r + 3))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    a = alpha / (1 + np.exp(np.clip((np.hypot(yy - y, xx - x) - r) / 0.6, -30, 30)))
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a[..., None]) + colour * a[..., None]


def _gland_field(rng, yy, xx, centres, radii, wobble: float) -> tuple[np.ndarray, np.ndarray]:
    """(signed distance to the nearest gland's edge, normalised radius 0 at centres) for irregular ellipses."""
    dist = np.full(yy.shape, np.inf, np.float32)
    rho = np.full(yy.shape, np.inf, np.float32)
    for (cy, cx), r in zip(centres, radii, strict=True):
        ang = np.arctan2(yy - cy, xx - cx)
        shape = 1 + sum(rng.uniform(0, wobble) * np.sin(k * ang + rng.uniform(0, 6.3)) for k in (2, 3, 5, 7))
        rr = r * shape * np.sqrt(1 + rng.uniform(-0.25, 0.25) * np.cos(2 * (ang - rng.uniform(0, 3.2))))
        d = np.hypot(yy - cy, xx - cx) - rr
        closer = d < dist
        dist = np.where(closer, d, dist)
        rho = np.where(closer, np.hypot(yy - cy, xx - cx) / np.maximum(rr, 1), rho)
    return dist, rho


def tile(rng: np.random.Generator, grade: int) -> np.ndarray:
    """One 128x128 RGB tile of class ``grade`` (an index into LABELS)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    eosin = np.array([rng.uniform(215, 245), rng.uniform(150, 195), rng.uniform(185, 220)], np.float32)
    haem = np.array([rng.uniform(60, 110), rng.uniform(40, 80), rng.uniform(120, 170)], np.float32)
    lumen = np.array([245, 238, 242], np.float32) - rng.uniform(0, 15)
    fibres = 1 + 0.06 * np.sin(yy * rng.uniform(0.2, 0.5) + xx * rng.uniform(-0.3, 0.3) + rng.normal(0, 0.8, yy.shape))
    img = eosin * fibres[..., None]
    nucleus_r = rng.uniform(1.2, 1.8) * (1.35 if grade == 3 else 1.0)

    if grade < 3:
        if grade == 0:  # benign: a few large, well-separated round glands with folded (papillary) edges
            n, r_range, wobble, gap = int(rng.integers(2, 4)), (18, 28), 0.09, 1.1
        elif grade == 1:  # grade 3: many small, separate, round glands
            n, r_range, wobble, gap = int(rng.integers(7, 12)), (7, 11), 0.05, 1.25
        else:  # grade 4: fused, irregular glands with several lumina each
            n, r_range, wobble, gap = int(rng.integers(2, 4)), (20, 30), 0.22, 0.8
        centres, radii = [], []
        for _ in range(200):
            if len(centres) == n:
                break
            r = rng.uniform(*r_range)
            c = rng.uniform(r * 0.4, SIZE - r * 0.4, 2)
            if all(np.hypot(*(c - p)) > gap * (r + q) for p, q in zip(centres, radii, strict=True)):
                centres.append(c)
                radii.append(r)
        dist, rho = _gland_field(rng, yy, xx, centres, radii, wobble)
        epithelium = 1 / (1 + np.exp(np.clip(dist / 0.8, -30, 30)))
        cyto = eosin * np.array([0.85, 0.8, 0.92], np.float32)
        img = img * (1 - epithelium[..., None]) + cyto * epithelium[..., None]
        if grade == 2:  # cribriform: many small punched-out lumina inside the gland
            for (cy, cx), r in zip(centres, radii, strict=True):
                for _ in range(int(rng.integers(4, 9))):
                    a, m = rng.uniform(0, 6.3), rng.uniform(0, 0.6) * r
                    _stamp(img, cy + m * np.sin(a), cx + m * np.cos(a), rng.uniform(2, 4.5), lumen)
        else:
            inner = 1 / (1 + np.exp(np.clip((rho - rng.uniform(0.55, 0.7)) / 0.05, -30, 30)))
            img = img * (1 - inner[..., None]) + lumen * inner[..., None]
        # epithelial nuclei along each gland's edge: evenly spaced when benign, crowded and uneven with grade
        for (cy, cx), r in zip(centres, radii, strict=True):
            k = int(2 * np.pi * r / (3.2 if grade < 2 else 2.4))
            jitter = (0.02, 0.04, 0.12)[grade]
            for a in np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.normal(0, jitter * 3, k):
                m = r * (0.8 + rng.normal(0, jitter))
                _stamp(img, cy + m * np.sin(a), cx + m * np.cos(a), nucleus_r * rng.uniform(0.9, 1.2), haem)
        stroma_nuclei = int(rng.integers(15, 35))
    else:  # grade 5: no glands; sheets and cords of crowded, enlarged nuclei
        sheet = np.sin(yy * rng.uniform(0.05, 0.12) + rng.uniform(0, 6)) + np.cos(xx * rng.uniform(0.05, 0.12))
        keep = sheet > rng.uniform(-0.8, 0.2)
        ys, xs = np.nonzero(keep)
        pick = rng.choice(len(ys), size=min(len(ys), int(rng.integers(260, 420))), replace=False)
        cyto = eosin * np.array([0.88, 0.82, 0.93], np.float32)
        img = np.where(keep[..., None], img * 0.5 + cyto * 0.5, img)
        for i in pick:
            _stamp(img, ys[i] + rng.normal(0, 0.5), xs[i] + rng.normal(0, 0.5), nucleus_r * rng.uniform(1.0, 1.5), haem)
        stroma_nuclei = int(rng.integers(5, 15))
    for _ in range(stroma_nuclei):  # stromal cells: small, elongated-looking dark dots scattered everywhere
        _stamp(img, rng.uniform(0, SIZE), rng.uniform(0, SIZE), nucleus_r * 0.8, haem * 0.9, 0.9)

    img *= (1 + rng.normal(0, 0.05) * (yy / SIZE - 0.5))[..., None]
    if (sigma := rng.uniform(0, 0.9)) > 0.3:  # focus
        k = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
        k /= k.sum()
        img = sum(k[i] * np.roll(img, i - 2, 0) for i in range(5))
        img = sum(k[i] * np.roll(img, i - 2, 1) for i in range(5))
    img += rng.normal(0, rng.uniform(1.5, 5), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """``n`` tiles, the four grades in equal shares (shuffled). Labels index ``LABELS``."""
    rng = np.random.default_rng(seed)
    labels = [i % len(LABELS) for i in range(n)]
    rng.shuffle(labels)
    return [tile(rng, g) for g in labels], labels
