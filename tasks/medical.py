"""Medical image input: DICOM and NIfTI slices to the 8-bit greyscale the detector sees, and back again.

Untrusted bytes in, :class:`~tasks.images.InputError` with a 4xx status out on anything unusable. Intensities
become 8 bits the same way in training and serving: the DICOM's own window when it has one, else a robust
0.5-99.5 percentile window.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator

import numpy as np

from tasks.images import Budget, ImageLimits, InputError

DICOM_MAGIC_OFFSET = 128
GZIP_MAGIC = b"\x1f\x8b"
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is one deflate stream
# The transfer syntaxes read (others, such as MPEG / HEVC video or private ones, are refused before decoding):
# native, deflated (inflated here with a cap), RLE, JPEG, JPEG-LS and JPEG 2000 (decoders the suite installs).
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    DEFLATED: "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    **{f"1.2.840.10008.1.2.4.{n}": "JPEG" for n in (50, 51, 57, 70)},
    **{f"1.2.840.10008.1.2.4.{n}": "JPEG-LS" for n in (80, 81)},
    **{f"1.2.840.10008.1.2.4.{n}": "JPEG 2000" for n in (90, 91, 201, 202, 203)},
}
PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010), little and big endian
IN_CHUNK, OUT_CHUNK = 256 * 1024, 1024 * 1024


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


def decode_dicom(
    data: bytes,
    slice_index: int | None,
    limits: ImageLimits,
    budget: Budget | None = None,
    *,
    max_bytes: int | None = None,
) -> np.ndarray:
    """A DICOM file -> HxW uint8: rescale slope / intercept, then the file's window (or percentiles).

    Multi-frame files need ``slice_index``. A file without pixel data is refused. Only the frame asked for is
    decoded: the header (Rows, Columns, NumberOfFrames, BitsAllocated, SamplesPerPixel) is checked against the
    limits and against what the pixel data can hold, the frame is charged to ``budget``, and pydicom then reads
    that frame alone from the bytes. A Deflated Explicit VR Little Endian dataset is inflated here, never past
    ``max_bytes`` (default ``8 * limits.max_pixels``: four 16-bit frames of the largest image allowed): 413 beyond.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, pixel_array

    cap = 8 * limits.max_pixels if max_bytes is None else max_bytes
    src = io.BytesIO(data)
    try:
        meta, meta_end = _file_meta(src)
        if meta.get("TransferSyntaxUID") == DEFLATED:
            src = _inflate_dicom(data, meta, meta_end, cap)
        ds = pydicom.dcmread(src, stop_before_pixels=True)
        # dcmread stops with the file at the start of the pixel data element (as pixel_array relies on too)
        pixel_at = src.tell()
        has_pixels = src.read(4) in PIXEL_DATA_TAGS
        size = src.seek(0, io.SEEK_END)
        tsyntax = _transfer_syntax(ds)
    except InputError:
        raise
    except Exception as e:  # pydicom raises many types on malformed files
        raise InputError(f"corrupt DICOM file: {e}", 400) from e
    if not has_pixels:
        raise InputError("the DICOM file has no pixel data (truncated, or a report or structured document)", 422)
    rows, cols = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
    frames = _header_int(ds, "NumberOfFrames", 1) or 1  # 0 means 1, as pydicom reads it
    bits, samples = _header_int(ds, "BitsAllocated", 0), _header_int(ds, "SamplesPerPixel", 1)
    if frames < 0:
        raise InputError(f"the DICOM header gives NumberOfFrames {frames}: it must be a positive whole number", 400)
    _check_size(cols, rows, limits)
    if bits not in (1, 8, 16, 32, 64) or samples not in (1, 3, 4):
        raise InputError(f"unsupported DICOM pixel layout: {bits} bits allocated, {samples} samples per pixel", 422)
    # Bound the frame count by what the bytes can hold, so a header cannot send pydicom looking for frames that
    # are not there: native data holds every frame in full, encapsulated data at least an 8-byte item per frame.
    room = max(size - pixel_at - 8, 0)  # after the shortest pixel data element header
    if str(tsyntax) not in TRANSFER_SYNTAXES:
        raise InputError(
            f"unsupported DICOM transfer syntax {str(tsyntax)[:64]!r}: the service reads "
            f"{', '.join(sorted(set(TRANSFER_SYNTAXES.values())))}",
            415,
        )
    if tsyntax.is_encapsulated:
        if frames * 8 > room:
            raise InputError(
                f"corrupt DICOM file: the header gives {frames:,} frames, more than its {room:,} bytes of "
                "encapsulated pixel data can hold",
                400,
            )
    else:
        need = -(-rows * cols * samples * bits * frames // 8)
        if ds.get("PhotometricInterpretation") == "YBR_FULL_422":  # stored subsampled: 2 values a pixel, not 3
            need = need // 3 * 2
        if need > room:
            raise InputError(
                f"corrupt DICOM file: {frames:,} frame(s) of {cols}x{rows} need {need:,} bytes of pixel data, "
                f"the file holds at most {room:,}",
                400,
            )
    if frames > 1:
        index = _slice_number(slice_index, frames, "frame")
    elif slice_index not in (None, 0):
        raise InputError(f"slice {slice_index} out of range: the DICOM has 1 frame", 422)
    else:
        index = 0
    if budget is not None:
        budget.charge(rows * cols, f"{cols}x{rows}")
    try:
        src.seek(0)
        pixels = pixel_array(src, index=index, transfer_syntax_uid=tsyntax)  # reads only that frame's bytes
    except Exception:  # pydicom raises many types for bad or unsupported encodings
        # pydicom's frame reader trusts the transfer syntax to say how the pixel data element is encoded; a file
        # that switches encoding on the way (dcmread copes) is read whole instead: its encoded bytes, no more
        # than the upload, and still one frame decoded. A file that fails here too is refused.
        try:
            src.seek(0)
            whole = pydicom.dcmread(src)
            if not whole.file_meta.get("TransferSyntaxUID"):
                whole.file_meta.TransferSyntaxUID = tsyntax
            pixels = pixel_array(whole, index=index)
        except Exception as e:
            raise InputError(f"could not decode the DICOM pixel data: {e}", 400) from e
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour secondary capture: use luminance
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif pixels.ndim != 2:
        raise InputError(f"unsupported DICOM pixel layout {pixels.shape}", 422)
    try:
        values = apply_modality_lut(pixels, ds).astype(np.float32)
        center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
        inverted = ds.get("PhotometricInterpretation") == "MONOCHROME1"  # 0 is white in MONOCHROME1
    except Exception as e:  # a malformed modality LUT or window element
        raise InputError(f"could not apply the DICOM rescale or window: {e}", 400) from e
    out = window_to_uint8(values, center, width)
    return 255 - out if inverted else out


def decode_nifti(
    data: bytes, slice_index: int | None, limits: ImageLimits, max_bytes: int, budget: Budget | None = None
) -> np.ndarray:
    """A NIfTI file (``.nii`` or ``.nii.gz``) -> HxW uint8. 3-D volumes need ``slice_index`` (axial, last axis).

    The header is read first and checked; then only the requested slice's voxels are kept (a gzip stream is
    inflated a chunk at a time, the rest counted to enforce ``max_bytes`` and the volume's full length), and only
    that slice is charged to ``budget`` and converted to float32, with the file's scaling, as the whole volume was.
    """
    import nibabel as nib
    from nibabel.arrayproxy import ArrayProxy

    if data[:2] == GZIP_MAGIC:
        stream = _Forward(_inflate(data, 16 + zlib.MAX_WBITS, "gzip"), max_bytes, "NIfTI decompresses to more than")
    else:
        stream = _Forward(iter((data,)), None, "")
    head = stream.read_range(0, 540)
    try:
        klass = nib.Nifti2Image if head[4:8] == b"n+2\x00" else nib.Nifti1Image
        # The fixed header only: extensions (between it and vox_offset) carry nothing the slice needs.
        header = klass.header_class(head[: 540 if klass is nib.Nifti2Image else 348])
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get_data_offset())
        slope, inter = header.get_slope_inter()
    except Exception as e:  # nibabel raises several types on bad headers
        raise InputError(f"corrupt NIfTI file: {e}", 400) from e
    if len(shape) > 3 and any(d != 1 for d in shape[3:]):
        raise InputError(f"NIfTI of shape {tuple(shape)}: send one 2-D slice or a 3-D volume, not a 4-D series", 422)
    if len(shape) < 2:
        raise InputError(f"NIfTI of shape {tuple(shape)}: an image needs at least two dimensions", 422)
    if offset < 0 or any(d < 0 for d in shape):
        raise InputError(f"corrupt NIfTI file: shape {shape}, voxel offset {offset}", 400)
    nx, ny = shape[0], shape[1]
    _check_size(nx, ny, limits)
    if len(shape) >= 3:
        depth = shape[2]
        index = _slice_number(slice_index, depth, "slice")
    elif slice_index not in (None, 0):
        raise InputError(f"slice {slice_index} out of range: the NIfTI image is 2-D", 422)
    else:
        depth, index = 1, 0
    if budget is not None:
        budget.charge(nx * ny, f"{nx}x{ny}")
    plane = nx * ny * dtype.itemsize  # NIfTI is column-major: one axial slice is one contiguous run of bytes
    raw = stream.read_range(offset + index * plane, plane)
    total = stream.drain()
    if len(raw) < plane or total < offset + depth * plane:
        raise InputError(
            f"could not read the NIfTI voxels: the header says {depth * plane:,} bytes of them, "
            f"the file holds {max(total - offset, 0):,}",
            400,
        )
    try:
        # The same proxy and scaling nibabel builds for the whole volume, over this one slice.
        spec = ((nx, ny), dtype, 0, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
        proxy = ArrayProxy(io.BytesIO(raw), spec)
        voxels = np.asarray(proxy, dtype=np.float32)
    except Exception as e:
        raise InputError(f"could not read the NIfTI voxels: {e}", 400) from e
    # NIfTI stores x (left-right) first; turn it into rows x columns as viewers show an axial slice.
    return window_to_uint8(np.rot90(voxels))


def _slice_number(index: int | None, n: int, what: str) -> int:
    if index is None:
        raise InputError(f"this is a volume of {n} {what}s: give slice_index (0..{n - 1})", 422)
    if not 0 <= index < n:
        raise InputError(f"slice {index} out of range: the volume has {n} {what}s (0..{n - 1})", 422)
    return index


def _check_size(w: int, h: int, limits: ImageLimits) -> None:
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise InputError(f"image too large: {w}x{h} pixels", 413)
    if min(w, h) < limits.min_side:
        raise InputError(f"image too small: {w}x{h} pixels (at least {limits.min_side} px a side)", 422)


def _header_int(ds, keyword: str, default: int) -> int:
    """One whole number from a DICOM header element, or :class:`InputError` (400) for anything else."""
    try:
        value = ds.get(keyword)
    except Exception as e:  # pydicom converts values lazily, and raises on malformed ones
        raise InputError(f"corrupt DICOM file: its {keyword} element cannot be read ({e})", 400) from e
    if value is None or value == "":
        return default
    try:
        if isinstance(value, int):
            return int(value)
        text = str(value).strip()
        if not (text.isascii() and len(text) <= 12):  # int() would take other scripts' digits, and 4,300 of them
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise InputError(f"corrupt DICOM file: {keyword} is {str(value)[:32]!r}, not a whole number", 400) from None


def _transfer_syntax(ds):
    """The file's transfer syntax, or the encoding pydicom found it in when the file meta does not say."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax:
        return UID(tsyntax)
    implicit, little = ds.original_encoding[:2]
    return ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _file_meta(fp: io.BytesIO):
    """(file meta, offset of the dataset after it), ``fp`` rewound: the same reading dcmread does, stopping there."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    # pydicom's own reader of group 0002 (its public pixel_array uses it too): whatever transfer syntax dcmread
    # would act on, this sees, so a deflated dataset cannot reach dcmread's unbounded inflate.
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    end = fp.tell()
    fp.seek(0)
    return meta, end


def _inflate_dicom(data: bytes, meta, meta_end: int, cap: int) -> io.BytesIO:
    """A Deflated Explicit VR Little Endian file as the same file in Explicit VR Little Endian, inflated.

    pydicom would inflate the whole stream in one call, however far it expands. Here a first pass only counts
    (a chunk at a time, nothing kept), so a bomb is refused having held no more than a chunk; only a stream
    that stays within ``cap`` is inflated again, into the file pydicom then reads.
    """
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian

    size = 0
    for chunk in _inflate(memoryview(data)[meta_end:], -zlib.MAX_WBITS, "deflated DICOM"):
        size += len(chunk)
        if size > cap:
            raise InputError(f"the deflated DICOM dataset inflates to more than {cap:,} bytes (max_bytes)", 413)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = DicomBytesIO()
    write_file_meta_info(header, meta, enforce_standard=False)
    out = io.BytesIO()
    out.write(data[:DICOM_MAGIC_OFFSET] + b"DICM" + header.getvalue())
    for chunk in _inflate(memoryview(data)[meta_end:], -zlib.MAX_WBITS, "deflated DICOM"):
        out.write(chunk)
    out.seek(0)
    return out


def _inflate(data, wbits: int, what: str) -> Iterator[bytes]:
    """Inflate a zlib / gzip / raw deflate stream (by ``wbits``) in pieces of at most 1 MiB, up to its end.

    Input is fed 256 kB at a time, so neither the output nor zlib's unconsumed tail ever holds much. A stream
    that stops early just ends (the caller finds the data short); bytes after its end are ignored.
    """
    d = zlib.decompressobj(wbits)
    view = memoryview(data)
    pos, pending, full = 0, b"", False
    try:
        while not d.eof:
            if not pending and not full:  # a full piece may leave output inside zlib: ask again before feeding
                if pos >= len(view):
                    return
                pending, pos = view[pos : pos + IN_CHUNK], pos + IN_CHUNK
            out = d.decompress(pending, OUT_CHUNK)
            pending, full = d.unconsumed_tail, len(out) == OUT_CHUNK
            if out:
                yield out
    except zlib.error as e:
        raise InputError(f"corrupt {what} stream: {e}", 400) from e


class _Forward:
    """A byte stream given as chunks, read forward once: keeps its first 540 bytes and what is asked for, counts
    the rest, and raises 413 (``message`` + the cap) as soon as it grows past ``cap`` bytes."""

    def __init__(self, chunks: Iterator[bytes], cap: int | None, message: str) -> None:
        self._chunks, self._cap, self._message = chunks, cap, message
        self._buf = memoryview(b"")
        self.pos = 0  # offset of _buf[0] in the stream
        self.size = 0  # bytes produced so far
        self._head = b""

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self.size += len(chunk)
        if self._cap is not None and self.size > self._cap:
            raise InputError(f"{self._message} {self._cap} bytes", 413)
        self._buf = memoryview(chunk)
        return True

    def _take(self, n: int, keep: bool) -> bytes:
        parts = []
        while n > 0 and (self._buf or self._more()):
            piece = self._buf[:n]
            self._buf = self._buf[len(piece) :]
            self.pos += len(piece)
            n -= len(piece)
            if keep:
                parts.append(piece)
        return b"".join(parts)

    def read_range(self, start: int, n: int) -> bytes:
        """Bytes ``start`` .. ``start + n`` of the stream (fewer at its end); ``start`` at or past what was read,
        or within the first 540 bytes."""
        if not self._head and self.pos == 0:
            self._head = self._take(540, keep=True)
        got = self._head[start : start + n] if start < len(self._head) else b""
        start, n = start + len(got), n - len(got)
        if n <= 0 or start < self.pos:
            return got
        self._take(start - self.pos, keep=False)
        return got + self._take(n, keep=True)

    def drain(self) -> int:
        """Read to the end; the stream's length."""
        self._buf = memoryview(b"")
        while self._more():
            self._buf = memoryview(b"")
        return self.size
