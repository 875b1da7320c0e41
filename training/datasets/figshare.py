"""The figshare brain-tumour set (Cheng et al.): one MATLAB v7.3 (HDF5) ``.mat`` file per slice.

Struct ``cjdata``: ``image`` (512x512 int16, a few 256x256), ``label`` (1 meningioma, 2 glioma, 3 pituitary),
``PID`` (patient id, stored as MATLAB chars), ``tumorBorder``, ``tumorMask``. MATLAB writes arrays column-major,
so h5py reads them transposed. The box is the bounding box of ``tumorMask``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.medical import window_to_uint8


def read_mat(path: str | Path) -> tuple[np.ndarray, int, str, tuple[float, float, float, float]]:
    """One ``.mat`` file -> (HxW uint8 image, class index 0..2, patient id, box x0, y0, x1, y1)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "cjdata" not in f:
            raise ValueError(f"{path}: no 'cjdata' struct (not a figshare brain-tumour file)")
        cj = f["cjdata"]
        image = np.asarray(cj["image"], dtype=np.float32).T
        label = int(np.asarray(cj["label"]).ravel()[0])
        pid = "".join(chr(int(c)) for c in np.asarray(cj["PID"]).ravel())
        mask = np.asarray(cj["tumorMask"]).T > 0
    if label not in (1, 2, 3):
        raise ValueError(f"{path}: label {label} is not 1, 2 or 3")
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError(f"{path}: empty tumorMask")
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return window_to_uint8(image), label - 1, pid, box


def list_mat_files(root: str | Path) -> list[Path]:
    return sorted(Path(root).rglob("*.mat"), key=lambda p: (len(p.stem), p.stem))
