"""Synthetic brain-tumour slices: lesions of three classes planted on real MRI.

Bases are the real brain images that packages ship: nibabel's ``example4d.nii.gz`` (an axial brain volume, two
time points), nibabel's ``anatomical.nii`` and pydicom's ``MR_small.dcm``. Each synthetic *patient* is one base
under its own smooth deformation, flip, scale, rotation, bias field, contrast curve and noise; its slices stay
together on one side of any split (``groups``).

Lesions follow the classes' typical appearance on contrast T1:
- meningioma: extra-axial, on the brain's edge, round, homogeneously and brightly enhancing, sharp margin;
- glioma: intra-axial in a hemisphere, irregular, ring-enhancing around a dark necrotic core, with a
  hypointense oedema halo and mass effect (surrounding tissue pushed away);
- pituitary: small, midline, at the sella (lower centre of an axial slice), homogeneously enhancing.
A share of slices carries no lesion.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from tasks.medical import window_to_uint8

MENINGIOMA, GLIOMA, PITUITARY = 0, 1, 2  # indices into tasks.tumor.TUMOR.labels
NO_LESION_SHARE = 0.2


@lru_cache(maxsize=1)
def base_volumes() -> dict[str, np.ndarray]:
    """Real MRI from installed packages: name -> (H, W, Z) float32 axial stack with brain in every slice."""
    import nibabel
    import pydicom

    nib_data = Path(nibabel.__file__).parent / "tests" / "data"
    vol4d = np.asarray(nibabel.load(nib_data / "example4d.nii.gz").dataobj, dtype=np.float32)
    anat = np.asarray(nibabel.load(nib_data / "anatomical.nii").dataobj, dtype=np.float32)
    small = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm")
    return {
        "example4d-t0": np.rot90(vol4d[:, :, 3:21, 0]).copy(),
        "example4d-t1": np.rot90(vol4d[:, :, 3:21, 1]).copy(),
        "anatomical": np.rot90(anat[:, :, 4:21]).copy(),
        "mr_small": small.pixel_array.astype(np.float32)[..., None],
    }


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    zoom = (shape[0] / img.shape[0], shape[1] / img.shape[1])
    return ndimage.zoom(img, zoom, order=1)


class Patient:
    """One synthetic patient: a base volume and the transforms that make it someone else."""

    def __init__(self, rng: np.random.Generator, base: str, volume: np.ndarray) -> None:
        self.rng, self.base, self.volume = rng, base, volume
        h = int(rng.integers(224, 321))
        aspect = volume.shape[1] / volume.shape[0] * rng.uniform(0.9, 1.1)
        self.shape = (h, int(np.clip(h * aspect, 160, 360)))
        self.flip = rng.random() < 0.5
        self.angle = rng.uniform(-12, 12)
        self.gamma = rng.uniform(0.7, 1.4)
        self.noise = rng.uniform(0.01, 0.04)
        coarse = rng.normal(0, 1, (2, 4, 4))
        self.warp = [_resize(c, self.shape) * rng.uniform(2, 6) for c in coarse]  # smooth displacement, px
        self.bias = 1 + _resize(rng.normal(0, 0.12, (3, 3)), self.shape)

    def slice(self, z: int) -> np.ndarray:
        img = self.volume[:, :, z]
        img = (img - img.min()) / (np.percentile(img, 99.5) - img.min() + 1e-6)
        img = _resize(np.clip(img, 0, 1.2), self.shape)
        if self.flip:
            img = img[:, ::-1]
        img = ndimage.rotate(img, self.angle, reshape=False, order=1)
        yy, xx = np.mgrid[0 : self.shape[0], 0 : self.shape[1]].astype(np.float32)
        img = ndimage.map_coordinates(img, [yy + self.warp[0], xx + self.warp[1]], order=1)
        return np.clip(img, 0, None) ** self.gamma * self.bias


def brain_mask(img: np.ndarray) -> np.ndarray:
    smooth = ndimage.gaussian_filter(img, 2)
    mask = ndimage.binary_fill_holes(smooth > 0.25 * np.percentile(smooth, 99))
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, labels, range(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return mask


def _soft_disc(yy, xx, cy, cx, ry, rx, wobble=None, edge=1.2):
    theta = np.arctan2(yy - cy, xx - cx)
    scale = 1.0 if wobble is None else wobble(theta)
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) / scale
    return 1 / (1 + np.exp(np.clip((rho - 1) * min(ry, rx) / edge, -30, 30))), rho


def plant(rng: np.random.Generator, img: np.ndarray, cls: int) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """Plant one lesion of class ``cls``; returns the image and its box (x0, y0, x1, y1), or None if the
    slice has too little brain to hold it."""
    mask = brain_mask(img)
    ys, xs = np.nonzero(mask)
    if len(ys) < 0.08 * img.size:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bh, bw = y1 - y0, x1 - x0
    cy_b, cx_b = (y0 + y1) / 2, (x0 + x1) / 2
    level = float(np.percentile(img[mask], 90))
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    harmonics = [(k, rng.uniform(0, 0.12), rng.uniform(0, 6.3)) for k in (2, 3, 5)]

    def wobble(theta):
        return 1 + sum(a * np.sin(k * theta + p) for k, a, p in harmonics)

    if cls == MENINGIOMA:
        edge = np.argwhere(mask & ~ndimage.binary_erosion(mask, iterations=2))
        ey, ex = edge[rng.integers(len(edge))]
        r = rng.uniform(0.06, 0.11) * min(bh, bw)
        inward = np.array([cy_b - ey, cx_b - ex]) / (np.hypot(cy_b - ey, cx_b - ex) + 1e-6)
        cy, cx = ey + inward[0] * r * 0.4, ex + inward[1] * r * 0.4
        alpha, _ = _soft_disc(yy, xx, cy, cx, r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.1), edge=0.8)
        img = img * (1 - alpha) + level * rng.uniform(1.35, 1.7) * alpha
        core = alpha
    elif cls == GLIOMA:
        side = rng.choice([-1, 1])
        cx = cx_b + side * rng.uniform(0.12, 0.28) * bw
        cy = cy_b + rng.uniform(-0.25, 0.2) * bh
        r = rng.uniform(0.07, 0.13) * min(bh, bw)
        # Mass effect: pull samples toward the centre so surrounding tissue appears pushed outward.
        d = np.hypot(yy - cy, xx - cx) + 1e-6
        push = 0.5 * r * np.exp(-((d / (2.2 * r)) ** 2))
        img = ndimage.map_coordinates(img, [yy - (yy - cy) / d * push, xx - (xx - cx) / d * push], order=1)
        oedema, _ = _soft_disc(yy, xx, cy, cx, 1.7 * r, 1.7 * r, wobble, edge=3.0)
        img = img * (1 - 0.35 * oedema)
        core, rho = _soft_disc(yy, xx, cy, cx, r, r * rng.uniform(0.8, 1.2), wobble, edge=1.0)
        thickness = rng.uniform(0.18, 0.32)
        rim = core * (1 / (1 + np.exp(np.clip(((1 - thickness) - rho) * r / 0.8, -30, 30))))
        img = img * (1 - core) + core * level * rng.uniform(0.25, 0.45)  # necrotic core
        img = img * (1 - rim) + rim * level * rng.uniform(1.3, 1.6)  # enhancing rim
    else:  # PITUITARY
        cx = cx_b + rng.uniform(-0.03, 0.03) * bw
        cy = y0 + rng.uniform(0.55, 0.68) * bh
        r = rng.uniform(0.035, 0.06) * min(bh, bw)
        core, _ = _soft_disc(yy, xx, cy, cx, r * rng.uniform(0.8, 1.0), r * rng.uniform(1.0, 1.3), edge=0.7)
        img = img * (1 - core) + level * rng.uniform(1.25, 1.55) * core
    ys, xs = np.nonzero(core > 0.5)
    if len(ys) < 9:
        return None
    return img, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def generate(
    n: int, seed: int = 0
) -> tuple[list[np.ndarray], list[list[tuple[int, float, float, float, float]]], list[str]]:
    """``n`` slices -> (HxW uint8 images, per-image [(class, x0, y0, x1, y1), ...], patient ids).

    Patients are drawn in turn from the bases; each gives up to 6 slices. Classes are balanced over lesion slices.
    """
    rng = np.random.default_rng(seed)
    bases = base_volumes()
    names = sorted(bases)
    images, targets, groups = [], [], []
    patient_no = 0
    bar = tqdm(total=n, desc=f"synthetic MRI (seed {seed})", unit="slice", leave=False)
    while len(images) < n:
        name = names[patient_no % len(names)]
        volume = bases[name]
        patient = Patient(np.random.default_rng(rng.integers(1 << 63)), name, volume)
        pid = f"{seed}-{patient_no}-{name}"
        patient_no += 1
        zs = rng.choice(volume.shape[2], size=min(6, volume.shape[2]), replace=False)
        for z in zs:
            if len(images) >= n:
                break
            img = patient.slice(int(z))
            boxes = []
            if rng.random() >= NO_LESION_SHARE:
                cls = int(len(images) % 3)
                planted = plant(rng, img, cls)
                if planted is not None:
                    img, box = planted
                    boxes.append((cls, *box))
            img = img + rng.normal(0, patient.noise, img.shape) * np.percentile(img, 95)
            images.append(window_to_uint8(img))
            targets.append(boxes)
            groups.append(pid)
            bar.update()
    bar.close()
    return images, targets, groups
