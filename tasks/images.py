"""Image decoding, validation and preprocessing, shared by training, export validation and serving.

Serving calls :func:`decode_image` on untrusted bytes; every failure is an :class:`InputError` carrying the HTTP
status and a message that says what was wrong. :func:`preprocess` is the one transform a model ever sees.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Formats a client may upload. GIF, WebP, etc. are refused with 415 rather than guessed at.
ACCEPTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
# A progressive JPEG is decoded once per scan: cameras and encoders write about 10; thousands make a small file
# cost minutes of decoding (Pillow's decompression-bomb limit counts pixels only).
MAX_JPEG_SCANS = 64
SOS = b"\xff\xda"  # JPEG start-of-scan marker (0xFF inside entropy-coded data is always followed by 0x00 or RSTn)


class InputError(ValueError):
    """Bad client input: ``status`` is the HTTP status to answer with, ``str(self)`` the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded image may be: pixel count bounds guard against decompression bombs."""

    min_side: int = 16
    max_side: int = 8192
    max_pixels: int = 25_000_000


class Budget:
    """Decoded values (pixels, or audio samples) one request may hold in all; decoders charge it from the
    header, before they decode. Not shared between requests (one per request, used by one thread).

    ``unit`` names what is counted and ``knob`` the setting that sets ``limit``; both appear in the 413 message,
    so a client learns what it ran into and an operator what to raise.
    """

    def __init__(self, limit: int, unit: str = "pixels", knob: str = "max_request_pixels") -> None:
        if limit < 0:
            raise ValueError(f"a budget cannot be negative (got {limit})")
        self.limit = limit
        self.unit = unit
        self.knob = knob
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def charge(self, n: int, what: str) -> None:
        """Take ``n`` from the budget for ``what`` (e.g. ``"5000x5000"``), or raise :class:`InputError` (413)."""
        if n < 0:
            raise ValueError(f"cannot charge a negative amount ({n})")
        if self.used + n > self.limit:
            raise InputError(
                f"{what} = {n:,} {self.unit} would bring this request to {self.used + n:,} {self.unit}, "
                f"past its budget of {self.limit:,} {self.unit} ({self.knob})",
                413,
            )
        self.used += n

    def __repr__(self) -> str:
        return f"Budget({self.used:,}/{self.limit:,} {self.unit}, {self.knob})"


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    gray: bool = False,
    draft: int | None = None,
    budget: Budget | None = None,
) -> Image.Image:
    """Decode untrusted bytes into an 8-bit RGB (or, with ``gray``, L) image, or raise :class:`InputError`.

    The size is checked from the header before any pixel is decoded, so a small file that claims a huge canvas
    costs nothing. 16-bit / 32-bit grey, palette, CMYK, bilevel and alpha images are converted. The file format
    is kept in ``image.info["format"]``, the size in the file in ``image.info["original_size"]``. With ``draft``,
    a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps its longer side at least ``draft``
    pixels: several times faster, for callers that shrink anyway. With ``budget``, the pixels about to be decoded
    (after any draft scaling) are charged to it before decoding. Only the first frame of a multi-frame file (TIFF)
    is ever decoded.
    """
    if not data:
        raise InputError("empty file: the request carried no image bytes", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise InputError(f"not a readable image: expected one of {', '.join(ACCEPTED_FORMATS)}", 415) from e
        raise InputError(f"image too large: {e}", 413) from e
    except Exception as e:  # PIL raises many types on malformed headers
        raise InputError(f"could not read the image header: {e}", 400) from e
    if img.format not in ACCEPTED_FORMATS:
        raise InputError(f"unsupported image format {img.format}: send one of {', '.join(ACCEPTED_FORMATS)}", 415)
    w, h = img.size
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise InputError(
            f"image too large: {w}x{h} pixels (limits: {limits.max_side} px a side, {limits.max_pixels} pixels in all)",
            413,
        )
    if min(w, h) < limits.min_side:
        raise InputError(f"image too small: {w}x{h} pixels (at least {limits.min_side} px a side)", 422)
    if img.format == "JPEG" and (scans := data.count(SOS)) > MAX_JPEG_SCANS:
        raise InputError(f"a JPEG of {scans} scans: at most {MAX_JPEG_SCANS} are decoded (re-encode it)", 422)
    try:
        if draft and img.format == "JPEG" and img.mode in ("RGB", "L"):
            scale = draft / max(w, h)
            img.draft(img.mode, (max(1, round(w * scale)), max(1, round(h * scale))))
        if budget is not None:  # img.size is what load() will allocate: frame 0, after any draft scaling
            dw, dh = img.size
            budget.charge(dw * dh, f"{w}x{h}" if (dw, dh) == (w, h) else f"{w}x{h} (decoded at {dw}x{dh})")
        img.load()
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"corrupt or truncated image: {e}", 400) from e
    except Exception as e:
        raise InputError(f"could not decode the image: {e}", 400) from e
    out = to_gray(img) if gray else to_rgb(img)
    if (turn := img.getexif().get(ORIENTATION, 1)) in TURNED:  # as the camera meant it to be seen
        out = out.transpose(TURNED[turn])
        w, h = (h, w) if turn >= 5 else (w, h)
    out.info["format"] = img.format
    out.info["original_size"] = (w, h)  # as seen (EXIF orientation applied), before any draft scaling
    return out


ORIENTATION = 0x0112  # the EXIF / TIFF Orientation tag
TURNED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def to_gray(img: Image.Image) -> Image.Image:
    """Any supported mode to 8-bit greyscale (high bit depths stretched, as in :func:`to_rgb`)."""
    if img.mode == "L":
        return img
    return to_rgb(img).convert("L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any supported PIL mode to 8-bit RGB; alpha is composited over black (the NIH background).

    Raises :class:`InputError` (415) for modes with no meaningful RGB rendering.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth grey: stretch the used range to 8 bits rather than clipping at 255.
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    raise InputError(f"unsupported image mode {mode!r}", 415)


def resize(img: Image.Image, size: int) -> np.ndarray:
    """Squash an RGB image to ``size`` x ``size`` (bilinear). Returns HxWx3 uint8."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def normalize(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> float32 (N, 3, H, W): ``(x / 255 - mean) / std`` per channel."""
    # Transpose while still uint8 (a quarter of the bytes), then one multiply-add in place.
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
    std_ = np.asarray(std, dtype=np.float32)[:, None, None]
    x *= 1.0 / (255.0 * std_)
    x -= (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32))[:, None, None]
    return x


def preprocess(images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB images -> model input float32 (N, 3, size, size). The transform every model sees."""
    return normalize(np.stack([resize(im, size) for im in images]), mean, std)


def encode_png(image: np.ndarray | Image.Image) -> bytes:
    """An image, or an HxWx3 (or HxW) uint8 array -> PNG bytes."""
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
