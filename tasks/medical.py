"""Medical image input: DICOM and NIfTI slices to the 8-bit greyscale the detector sees, and back again.

Untrusted bytes in, :class:`~tasks.images.InputError` with a 4xx status out on anything unusable. Intensities
become 8 bits the same way in training and serving: the DICOM's own window when it has one, else a robust
0.5-99.5 percentile window.
"""

from __future__ import annotations

import io
import zlib

import numpy as np

from tasks.images import ImageLimits, InputError

DICOM_MAGIC_OFFSET = 128
GZIP_MAGIC = b"\x1f\x8b"


def is_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def is_nifti(data: bytes) -> bool:
    """NIfTI-1/2 header (or a gzip stream, which must then hold one)."""
    if data[:2] == GZIP_MAGIC:
        return True
    return len(data) >= 348 and (data[344:348] in (b"n+1\x00", b"ni1\x00") or data[4:8] == b"n+2\x00")


def window_to_uint8(arr: np.ndarray, center: float | None = None, width: float | None = None) -> np.ndarray:
    """Float slice -> uint8 through a window (``center``/``width``), or a 0.5-99.5 percentile window."""
    a = np.asarray(arr, dtype=np.float32)
    if center is None or width is None or width <= 0:
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            raise InputError("the slice holds no finite values", 422)
        lo, hi = np.percentile(finite, (0.5, 99.5))
    else:
        lo, hi = center - width / 2, center + width / 2
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return (np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def decode_dicom(data: bytes, slice_index: int | None, limits: ImageLimits) -> np.ndarray:
    """A DICOM file -> HxW uint8: rescale slope / intercept, then the file's window (or percentiles).

    Multi-frame files need ``slice_index``. A file without pixel data is refused.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as e:
        raise InputError(f"corrupt DICOM file: {e}", 400) from e
    if "PixelData" not in ds:
        raise InputError("the DICOM file has no pixel data (truncated, or a report or structured document)", 422)
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_size(cols, rows, limits)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for bad or unsupported encodings
        raise InputError(f"could not decode the DICOM pixel data: {e}", 400) from e
    if frames > 1:
        pixels = _pick_slice(pixels, 0, slice_index, "frame")
    elif slice_index not in (None, 0):
        raise InputError(f"slice {slice_index} out of range: the DICOM has 1 frame", 422)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour secondary capture: use luminance
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif pixels.ndim != 2:
        raise InputError(f"unsupported DICOM pixel layout {pixels.shape}", 422)
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    out = window_to_uint8(values, center, width)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # 0 is white in MONOCHROME1
        out = 255 - out
    return out


def decode_nifti(data: bytes, slice_index: int | None, limits: ImageLimits, max_bytes: int) -> np.ndarray:
    """A NIfTI file (``.nii`` or ``.nii.gz``) -> HxW uint8. 3-D volumes need ``slice_index`` (axial, last axis)."""
    import nibabel as nib

    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data, max_bytes)
    try:
        header_size = 540 if data[4:8] == b"n+2\x00" else 348
        klass = nib.Nifti2Image if header_size == 540 else nib.Nifti1Image
        img = klass.from_bytes(data)
        shape = img.shape
    except Exception as e:  # nibabel raises several types on bad headers
        raise InputError(f"corrupt NIfTI file: {e}", 400) from e
    if len(shape) > 3 and any(d != 1 for d in shape[3:]):
        raise InputError(f"NIfTI of shape {tuple(shape)}: send one 2-D slice or a 3-D volume, not a 4-D series", 422)
    if len(shape) < 2:
        raise InputError(f"NIfTI of shape {tuple(shape)}: an image needs at least two dimensions", 422)
    _check_size(shape[0], shape[1], limits)
    try:
        volume = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    except Exception as e:
        raise InputError(f"could not read the NIfTI voxels: {e}", 400) from e
    if volume.ndim == 3:
        volume = _pick_slice(volume, 2, slice_index, "slice")
    elif slice_index not in (None, 0):
        raise InputError(f"slice {slice_index} out of range: the NIfTI image is 2-D", 422)
    # NIfTI stores x (left-right) first; turn it into rows x columns as viewers show an axial slice.
    return window_to_uint8(np.rot90(volume))


def _pick_slice(volume: np.ndarray, axis: int, index: int | None, what: str) -> np.ndarray:
    n = volume.shape[axis]
    if index is None:
        raise InputError(f"this is a volume of {n} {what}s: give slice_index (0..{n - 1})", 422)
    if not 0 <= index < n:
        raise InputError(f"slice {index} out of range: the volume has {n} {what}s (0..{n - 1})", 422)
    return np.take(volume, index, axis=axis)


def _check_size(w: int, h: int, limits: ImageLimits) -> None:
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise InputError(f"image too large: {w}x{h} pixels", 413)
    if min(w, h) < limits.min_side:
        raise InputError(f"image too small: {w}x{h} pixels (at least {limits.min_side} px a side)", 422)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress with a cap, so a small .nii.gz cannot expand into gigabytes."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as e:
        raise InputError(f"corrupt gzip stream: {e}", 400) from e
    if len(out) > max_bytes or d.unconsumed_tail:
        raise InputError(f"NIfTI decompresses to more than {max_bytes} bytes", 413)
    return out
