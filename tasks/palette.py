"""Colour palettes: image -> N colours (hex, RGB, CIELAB, share of pixels) and a swatch.

Colour maths (sRGB <-> CIELAB under D65, CIEDE2000), pixel sampling, the deterministic k-means baseline and the
CIEDE2000 refinement live here, in NumPy, so that training, evaluation, the benchmark and the service measure and
produce palettes the same way. The learned generator's input (:func:`generator_input`) is defined here too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.spec import PaletteSpec

PALETTE = PaletteSpec(
    name="palette",
    description="Image -> N colours (hex, RGB, CIELAB, share of pixels) sorted by share, and a swatch PNG.",
    synthetic="training.datasets.swatches:generate",
    train_defaults={"synthetic": 2000, "epochs": 30, "batch_size": 64, "lr": 2e-3, "patience": 5, "finetune_epochs": 6},
)

# sRGB (D65) -> XYZ, and the D65 white point the Lab conversion normalises by.
_RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883])
_C = np.arange(256) / 255.0
_LINEAR = np.where(_C <= 0.04045, _C / 12.92, ((_C + 0.055) / 1.055) ** 2.4)  # 8-bit sRGB -> linear light


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3), uint8 or float in [0, 1] -> float64 CIELAB (..., 3), D65."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8:
        lin = _LINEAR[rgb]
    else:
        c = np.clip(rgb, 0, 1)
        lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ (_RGB2XYZ / _WHITE[:, None]).T
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) -> uint8 sRGB (..., 3); colours outside the sRGB gamut are clipped."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    lin = np.clip(xyz @ _XYZ2RGB.T, 0, 1)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.round(srgb * 255), 0, 255).astype(np.uint8)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) between broadcastable CIELAB arrays (..., 3) -> (...)."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_bar**7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = a1 * (1 + g), a2 * (1 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dl = l2 - l1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(c1p * c2p == 0, 0, dh)
    dhh = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar = (l1 + l2) / 2
    cp_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180, np.where(h_sum < 360, h_sum + 360, h_sum - 360), h_sum) / 2
    h_bar = np.where(c1p * c2p == 0, h_sum, h_bar)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    sl = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    sc = 1 + 0.045 * cp_bar
    sh = 1 + 0.015 * cp_bar * t
    cp7 = cp_bar**7
    rt = -2 * np.sqrt(cp7 / (cp7 + 25.0**7)) * np.sin(np.radians(60 * np.exp(-(((h_bar - 275) / 25) ** 2))))
    return np.sqrt((dl / sl) ** 2 + (dc / sc) ** 2 + (dhh / sh) ** 2 + rt * (dc / sc) * (dhh / sh))


def distances(pixels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """CIEDE2000 from every pixel (N, 3) to every colour (K, 3) -> (N, K), all CIELAB."""
    return ciede2000(pixels[:, None, :], colours[None, :, :])


def reconstruction_error(pixels: np.ndarray, colours: np.ndarray) -> float:
    """Mean CIEDE2000 from each pixel to its nearest palette colour (lower is better)."""
    return float(distances(pixels, colours).min(1).mean())


def diversity(colours: np.ndarray) -> float:
    """Smallest CIEDE2000 between two palette colours (higher: no near-duplicates)."""
    if len(colours) < 2:
        return 0.0
    d = ciede2000(colours[:, None], colours[None])
    return float(d[np.triu_indices(len(colours), 1)].min())


def thumbnail(img: Image.Image, side: int) -> np.ndarray:
    """An RGB image shrunk (area-averaged) so that its longer side is at most ``side``: HxWx3 uint8."""
    w, h = img.size
    if max(w, h) > side:
        scale = side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def sample(pixels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` rows of ``pixels`` (N, C), chosen without replacement by a fixed seed, in random order (a
    prefix of the result is a sample too, also when the image has fewer than ``n`` pixels)."""
    rng = np.random.default_rng(seed)
    if len(pixels) <= n:
        return pixels[rng.permutation(len(pixels))]
    return pixels[rng.choice(len(pixels), n, replace=False)]


_R26 = np.radians(26)


def lab_to_din99o(lab: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) -> DIN99o (DIN 6176), where Euclidean distance approximates CIEDE2000."""
    lab = np.asarray(lab, dtype=np.float64)
    e = lab[..., 1] * np.cos(_R26) + lab[..., 2] * np.sin(_R26)
    f = 0.83 * (lab[..., 2] * np.cos(_R26) - lab[..., 1] * np.sin(_R26))
    c = np.log1p(0.075 * np.hypot(e, f)) / 0.0435
    h = np.arctan2(f, e) + _R26
    return np.stack([303.67 * np.log1p(0.0039 * lab[..., 0]), c * np.cos(h), c * np.sin(h)], -1)


def din99o_to_lab(d: np.ndarray) -> np.ndarray:
    """Inverse of :func:`lab_to_din99o`."""
    h = np.arctan2(d[..., 2], d[..., 1]) - _R26
    g = np.expm1(0.0435 * np.hypot(d[..., 1], d[..., 2])) / 0.075
    e, f = g * np.cos(h), g * np.sin(h) / 0.83
    return np.stack(
        [
            np.expm1(d[..., 0] / 303.67) / 0.0039,
            e * np.cos(_R26) - f * np.sin(_R26),
            e * np.sin(_R26) + f * np.cos(_R26),
        ],
        -1,
    )


def _sqdist(x: np.ndarray, c: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (S, N, K) between points x (N, 3) and S sets of centres c (S, K, 3);
    ``xx`` is (x * x).sum(1)."""
    return np.maximum(xx[None, :, None] - 2 * x @ c.transpose(0, 2, 1) + (c * c).sum(-1)[:, None], 0)


def _weighted_means(x: np.ndarray, assign: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per start and centre, the ``w``-weighted mean of the points assigned to it (S, N) -> (S, K, 3); a centre
    with no points stays where it was."""
    s, k = c.shape[:2]
    flat = (assign + k * np.arange(s)[:, None]).ravel()
    wsum = np.bincount(flat, w.ravel(), s * k).reshape(s, k)
    sums = np.stack([np.bincount(flat, (w * x[None, :, j]).ravel(), s * k) for j in range(3)], -1).reshape(s, k, 3)
    return np.where(wsum[..., None] > 0, sums / np.maximum(wsum, 1e-12)[..., None], c)


def kmeans(x: np.ndarray, k: int, starts: int = 1, iters: int = 30, tol: float = 1e-2) -> np.ndarray:
    """Deterministic k-means of points (N, 3) from ``starts`` k-means++ seedings (seeds 0, 1, ...), run side by
    side -> centres (starts, k', 3). k' < k only when the points hold fewer than k distinct values."""
    xx = (x * x).sum(1)
    seeded = []
    for seed in range(starts):
        rng = np.random.default_rng(seed)
        c = x[[rng.integers(len(x))]]
        d2 = _sqdist(x, c[None], xx)[0, :, 0]
        while len(c) < k and d2.sum() > 1e-9:
            c = np.vstack([c, x[rng.choice(len(x), p=d2 / d2.sum())]])
            d2 = np.minimum(d2, _sqdist(x, c[None, -1:], xx)[0, :, 0])
        seeded.append(c)
    k = min(len(c) for c in seeded)
    c = np.stack([c[:k] for c in seeded])
    ones = np.ones((starts, len(x)))
    for _ in range(iters):
        new = _weighted_means(x, _sqdist(x, c, xx).argmin(-1), ones, c)
        done = np.abs(new - c).max() < tol
        c = new
        if done:
            break
    return c


def kmedians(x: np.ndarray, c: np.ndarray, iters: int = 30, tol: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """From centres ``c`` (S, K, 3), minimise the mean Euclidean distance (not its square) of points (N, 3) to
    their nearest centre: Weiszfeld steps, each centre moving to its points' mean weighted by 1 / distance.
    Returns the centres (S, K, 3) and each set's mean distance (S,)."""
    xx = (x * x).sum(1)
    for _ in range(iters):
        d = np.sqrt(_sqdist(x, c, xx))
        assign = d.argmin(-1)
        nearest = np.take_along_axis(d, assign[..., None], -1)[..., 0]
        new = _weighted_means(x, assign, 1.0 / np.maximum(nearest, 0.3), c)
        done = np.abs(new - c).max() < tol
        c = new
        if done:
            break
    return c, np.sqrt(_sqdist(x, c, xx)).min(-1).mean(-1)


@dataclass(frozen=True)
class Palette:
    lab: np.ndarray  # (K, 3) CIELAB, sorted by share, largest first
    rgb: np.ndarray  # (K, 3) uint8 sRGB
    share: np.ndarray  # (K,) fraction of the image's pixels nearest to each colour, sums to 1


def finish(colours: np.ndarray, pixels: np.ndarray) -> Palette:
    """Palette colours (CIELAB) with their share of ``pixels`` (nearest under CIEDE2000), sorted by share; colours
    are snapped to 8-bit sRGB first, so that the Lab values reported are those of the colours the client sees."""
    rgb = lab_to_srgb(colours)
    rgb = np.unique(rgb, axis=0)  # two centres may round to one colour
    lab = srgb_to_lab(rgb)
    share = np.bincount(distances(pixels, lab).argmin(1), minlength=len(lab)) / len(pixels)
    order = np.argsort(-share, kind="stable")
    return Palette(lab=lab[order], rgb=rgb[order], share=share[order])


def image_pixels(thumb: np.ndarray, spec: PaletteSpec = PALETTE) -> np.ndarray:
    """The CIELAB pixels (N, 3) every method's palette is fitted on and its shares counted on: ``spec.fit_pixels``
    pixels (fixed-seed sample) of a :func:`thumbnail` (H, W, 3) uint8."""
    return srgb_to_lab(sample(thumb.reshape(-1, 3), spec.fit_pixels))


def extract(pixels: np.ndarray, n: int, method: str, starts: int = 5) -> np.ndarray:
    """Palette colours (CIELAB (n', 3), unsorted) of CIELAB ``pixels`` (N, 3) by a non-learned method.

    ``kmeans``: k-means in CIELAB, the baseline. ``kmedians``: k-means then k-medians in DIN99o, where Euclidean
    distance tracks CIEDE2000, so the mean distance is minimised in (about) the metric that is reported, rather
    than the mean square in CIELAB, which lets a few outlying pixels pull colours away from the bulk.
    """
    if method == "kmeans":
        return kmeans(pixels, n)[0]
    if method == "kmedians":
        # k-medians has local minima that matter: keep the best of a few deterministic starts
        x = lab_to_din99o(pixels)
        # choose among the starts on a quarter of the pixels (cheap), then fit the best one on all of them; a short
        # k-means before k-medians, and a tolerance of 0.05 (about 0.05 CIEDE2000): as good on the training photos
        # as running each to convergence, in two thirds of the time
        quarter = x[: max(len(x) // 4, n)]  # the pixels are a random sample already
        centres, cost = kmedians(quarter, kmeans(quarter, n, starts, iters=10, tol=0.05), iters=20, tol=0.05)
        return din99o_to_lab(kmedians(x, centres[[cost.argmin()]], iters=20, tol=0.05)[0][0])
    raise ValueError(f"unknown method {method!r}")


def generator_input(thumb: np.ndarray, spec: PaletteSpec = PALETTE) -> np.ndarray:
    """The learned generator's input from a :func:`thumbnail` (H, W, 3) uint8: squashed to ``spec.input_size``
    squared, CIELAB scaled to about [-1, 1]: float32 (3, S, S)."""
    small = Image.fromarray(thumb).resize((spec.input_size,) * 2, Image.Resampling.BOX)
    lab = srgb_to_lab(np.asarray(small, dtype=np.uint8)).astype(np.float32)
    return np.ascontiguousarray(((lab - LAB_SHIFT) / LAB_SCALE).transpose(2, 0, 1))


LAB_SHIFT = np.array([50.0, 0.0, 0.0], dtype=np.float32)
LAB_SCALE = np.array([50.0, 100.0, 100.0], dtype=np.float32)


def head_offsets(spec: PaletteSpec = PALETTE) -> dict[int, int]:
    """Where each palette size starts in the generator's output rows: sizes min..max, one head each."""
    offsets, start = {}, 0
    for n in range(spec.min_colors, spec.max_colors + 1):
        offsets[n] = start
        start += n
    return offsets


def swatch_png(palette: Palette, width: int = 400, height: int = 80) -> bytes:
    """A strip of the palette's colours, each as wide as its share (at least 4 px): PNG bytes."""
    widths = np.maximum(4, np.round(palette.share * width)).astype(int)
    row = np.repeat(palette.rgb, widths, axis=0)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(row[None], height, axis=0)).save(buf, format="PNG")
    return buf.getvalue()


def hex_code(rgb: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))
