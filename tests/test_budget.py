"""The per-request decoded-size budget, and decoders that check sizes from headers before they decode.

Each bomb is decoded in process while peak memory growth is measured: the larger of tracemalloc's peak (Python
and NumPy allocations) and the resident set's peak sampled every millisecond (Pillow's image memory, which
tracemalloc does not see). Without the budget, the frame-only DICOM read, the slice-only NIfTI read and the capped
inflate, each of these would grow by hundreds of MB to GBs.
"""

from __future__ import annotations

import gc
import gzip
import io
import struct
import threading
import tracemalloc
import zlib
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
from PIL import Image

from tasks.images import Budget, ImageLimits, InputError, decode_image
from tasks.medical import decode_dicom, decode_nifti, window_to_uint8
from tests.conftest import png_bytes

MB = 1 << 20
LIMITS = ImageLimits(min_side=16)


@dataclass
class Growth:
    traced: int = 0
    rss: int = 0

    @property
    def peak(self) -> int:
        return max(self.traced, self.rss)

    def __str__(self) -> str:
        return f"peak growth {self.peak / MB:.1f} MB (traced {self.traced / MB:.1f} MB, RSS {self.rss / MB:.1f} MB)"


@contextmanager
def memory_growth():
    gc.collect()
    proc = psutil.Process()
    base = proc.memory_info().rss
    high = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            high[0] = max(high[0], proc.memory_info().rss)
            stop.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    growth = Growth()
    try:
        yield growth
    finally:
        growth.traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        stop.set()
        sampler.join()
        growth.rss = max(high[0], proc.memory_info().rss) - base
        print(growth)


# ---------------------------------------------------------------------------------------------------- the budget


def test_budget_arithmetic_and_message():
    b = Budget(100)
    b.charge(60, "first")
    assert b.used == 60 and b.remaining == 40
    with pytest.raises(InputError) as e:
        b.charge(50, "images[1]: 10x5")
    assert e.value.status == 413
    assert str(e.value) == (
        "images[1]: 10x5 = 50 pixels would bring this request to 110 pixels, past its budget of 100 pixels "
        "(max_request_pixels)"
    )
    assert b.used == 60  # a refused charge takes nothing
    b.charge(40, "exactly the rest")
    with pytest.raises(InputError):
        b.charge(1, "one more")
    audio = Budget(16_000, unit="samples", knob="max_request_samples")
    with pytest.raises(InputError, match=r"20,000 samples .* budget of 16,000 samples \(max_request_samples\)"):
        audio.charge(20_000, "clip 0")
    with pytest.raises(ValueError):
        Budget(10).charge(-1, "negative")


@pytest.fixture(scope="module")
def flat_png() -> bytes:
    """A flat 5000x5000 RGB PNG: about 70 kB on the wire, 25 Mpx (100 MB in Pillow) decoded."""
    data = png_bytes(np.full((5000, 5000, 3), (40, 90, 160), np.uint8))
    gc.collect()
    assert len(data) < 150_000
    return data


def test_a_batch_of_flat_pngs_stops_at_the_request_budget(flat_png):
    budget = Budget(64_000_000)
    images, refused = [], None
    with memory_growth() as growth:
        for i in range(5):
            try:
                images.append(decode_image(flat_png, budget=budget))
            except InputError as e:
                refused = (i, e)
                break
    assert [im.size for im in images] == [(5000, 5000)] * 2
    assert refused is not None and refused[0] == 2 and refused[1].status == 413
    assert str(refused[1]) == (
        "5000x5000 = 25,000,000 pixels would bring this request to 75,000,000 pixels, past its budget of "
        "64,000,000 pixels (max_request_pixels)"
    )
    assert budget.used == 50_000_000
    # Two RGB images held (Pillow keeps 4 bytes a pixel: 200 MB); the third never allocated.
    assert growth.peak < 280 * MB, growth
    assert np.asarray(images[1])[2500, 2500].tolist() == [40, 90, 160]


def test_budget_is_charged_what_is_decoded():
    # A JPEG decoded with draft pays for the reduced size it is decoded at.
    jpeg = png_bytes((np.random.default_rng(0).random((3000, 4000, 3)) * 255).astype(np.uint8), fmt="JPEG")
    budget = Budget(10_000_000)
    img = decode_image(jpeg, draft=500, budget=budget)
    assert img.info["original_size"] == (4000, 3000) and img.size == (500, 375)
    assert budget.used == 500 * 375
    # A multi-frame TIFF: only frame 0 is decoded, and only it is charged.
    small, big = Image.new("RGB", (64, 48), (255, 0, 0)), Image.new("RGB", (3000, 3000))
    buf = io.BytesIO()
    small.save(buf, format="TIFF", save_all=True, append_images=[big])
    budget = Budget(10_000)
    img = decode_image(buf.getvalue(), budget=budget)
    assert img.size == (64, 48) and np.asarray(img)[0, 0].tolist() == [255, 0, 0]
    assert budget.used == 64 * 48
    # An image over the per-image limit is refused for that, before the budget is touched.
    budget = Budget(10**9)
    with pytest.raises(InputError, match="image too large: 6000x6000"):
        decode_image(png_bytes(np.zeros((6000, 6000), np.uint8)), ImageLimits(max_pixels=10_000_000), budget=budget)
    assert budget.used == 0
    # Without a budget nothing changes.
    assert decode_image(png_bytes(np.zeros((20, 30, 3), np.uint8))).size == (30, 20)


# -------------------------------------------------------------------------------------------------------- DICOM


def dicom(pixels: bytes, rows: int, cols: int, frames: int, ts: str, bits: int = 16, **extra) -> bytes:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames != 1:
        ds.NumberOfFrames = frames
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels
    if pydicom.uid.UID(ts).is_encapsulated:
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def frame(value: int, mark: tuple[int, int] | None = None) -> np.ndarray:
    """A 64x64 uint16 frame of horizontal stripes (a few hundred bytes in RLE), optionally with a bright mark."""
    f = np.repeat((np.arange(64, dtype=np.uint16) * 10 + value)[:, None], 64, axis=1)
    if mark is not None:
        f[mark[0] : mark[0] + 8, mark[1] : mark[1] + 8] = 4000
    return f


@pytest.fixture(scope="module")
def rle_4000_frames() -> tuple[bytes, dict[int, np.ndarray]]:
    return rle_dicom_of_4000_frames()


def rle_dicom_of_4000_frames() -> tuple[bytes, dict[int, np.ndarray]]:
    """4,000 RLE frames of 64x64 (32 MB decoded, ~1.3 MB on the wire); frames 3 and 3999 carry marks."""
    from pydicom.encaps import encapsulate
    from pydicom.pixels.encoders import RLELosslessEncoder
    from pydicom.uid import RLELossless

    options = dict(rows=64, columns=64, samples_per_pixel=1, bits_allocated=16, bits_stored=16, pixel_representation=0)
    options.update(photometric_interpretation="MONOCHROME2", number_of_frames=1, encoding_plugin="pydicom")
    planted = {3: frame(0, (10, 20)), 3999: frame(5, (40, 30))}
    plain = RLELosslessEncoder.encode(frame(0), **options)
    fragments = [RLELosslessEncoder.encode(planted[i], **options) if i in planted else plain for i in range(4000)]
    return dicom(encapsulate(fragments, has_bot=False), 64, 64, 4000, RLELossless), planted


def test_multi_frame_dicom_decodes_only_the_frame_asked_for(rle_4000_frames):
    data, planted = rle_4000_frames
    assert len(data) < 2 * MB
    budget = Budget(64 * 64 * 2)
    assert np.array_equal(decode_dicom(data, 3, LIMITS, budget), window_to_uint8(planted[3].astype(np.float32)))
    with memory_growth() as growth:  # the second request: pydicom's decoder modules are imported by now
        out = decode_dicom(data, 3999, LIMITS, budget)
    assert np.array_equal(out, window_to_uint8(planted[3999].astype(np.float32)))
    assert out[40:48, 30:38].min() == 255 and out[10:18, 20:28].max() < 255  # its mark, not frame 3's
    assert budget.used == 2 * 64 * 64  # one frame charged a request, not 4,000
    # The old path decoded all 4,000 frames (32 MB, +34 MB traced); one frame is 8 kB.
    assert growth.traced < 100 * 8192 and growth.rss < 8 * MB, growth
    with pytest.raises(InputError, match="would bring this request to 12,288 pixels"):
        decode_dicom(data, 0, LIMITS, budget)
    with pytest.raises(InputError, match=r"out of range: the volume has 4000 frames \(0..3999\)") as e:
        decode_dicom(data, 4000, LIMITS)
    assert e.value.status == 422
    with pytest.raises(InputError, match="give slice_index"):
        decode_dicom(data, None, LIMITS)


def test_native_multi_frame_dicom_reads_one_frame():
    from pydicom.uid import ExplicitVRLittleEndian

    volume = np.zeros((4000, 64, 64), np.uint8)
    volume[:, :, :] = (np.arange(64, dtype=np.uint8) * 2)[None, :, None]
    volume[2500, 5:15, 5:15] = 250
    data = dicom(volume.tobytes(), 64, 64, 4000, ExplicitVRLittleEndian, bits=8)
    del volume
    with memory_growth() as growth:
        out = decode_dicom(data, 2500, LIMITS)
    assert out[5:15, 5:15].min() == 255 and out[30:40, 30:40].max() < 255
    assert growth.traced < 100 * 4096 and growth.rss < 8 * MB, growth  # the file is 16 MB, the frame 4 kB


def patched(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1 and len(old) == len(new)
    return data.replace(old, new)


def hostile_dicoms() -> list:
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    one = frame(0).tobytes()
    frames8 = dicom(one * 8, 64, 64, 8, ExplicitVRLittleEndian, NumberOfFrames="8642")
    ten_items = encapsulate([b"\0" * 64] * 10)
    cases = {
        "NumberOfFrames 'abc'": (patched(frames8, b"8642", b"abc "), 0, 400),
        "NumberOfFrames -3": (patched(frames8, b"8642", b"-3  "), 0, 400),
        "NumberOfFrames 2.5": (patched(frames8, b"8642", b"2.5 "), 0, 400),
        "NumberOfFrames 1e9 native": (patched(frames8, b"8642", b"1e9 "), 5, 400),
        "NumberOfFrames 10**6 in 10 RLE items": (dicom(ten_items, 64, 64, 10**6, RLELossless), 9, 400),
        "Rows 0": (dicom(one, 0, 64, 1, ExplicitVRLittleEndian), None, 422),
        "Rows 65535 x Columns 65535": (dicom(one, 65535, 65535, 1, ExplicitVRLittleEndian), None, 413),
        "BitsAllocated 7": (dicom(one, 64, 64, 1, ExplicitVRLittleEndian, bits=7), None, 422),
        "pixel data shorter than its header": (dicom(one[:5000], 64, 64, 1, ExplicitVRLittleEndian), None, 400),
        "unknown transfer syntax": (
            patched(dicom(one, 64, 64, 1, ExplicitVRLittleEndian), b"1.2.840.10008.1.2.1\0", b"1.2.3.4.5.6.7.8.9.10"),
            None,
            415,
        ),
    }
    return [pytest.param(*case, id=name) for name, case in cases.items()]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the invalid values it reads
@pytest.mark.parametrize("data, index, status", hostile_dicoms())
def test_hostile_dicom_headers_are_input_errors(data, index, status):
    with pytest.raises(InputError) as e:
        decode_dicom(data, index, LIMITS)
    assert e.value.status == status, str(e.value)


def deflated_bomb(zeros: int) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose 64x64 header hides ``zeros`` bytes of pixel data: ~1 kB on
    the wire per MB inflated. Built from one 16 MB block of zeros, flushed to stand alone, repeated."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    ds = Dataset()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 64, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_header = b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", zeros)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflate.compress(body.getvalue() + pixel_header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(16 * MB)) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert zeros % (16 * MB) == 0
    return head.getvalue() + stream + block * (zeros // (16 * MB)) + deflate.flush()


def test_deflated_dicom_bomb_is_refused_without_inflating_it():
    bomb = deflated_bomb(2048 * MB)  # 2 GB of zeros behind a 64x64 header
    assert len(bomb) < 3 * MB
    with memory_growth() as growth, pytest.raises(InputError) as e:
        decode_dicom(bomb, None, LIMITS)
    assert e.value.status == 413 and "inflates to more than 200,000,000 bytes" in str(e.value)
    assert growth.peak < 16 * MB, growth  # pydicom's own reader holds the whole 2 GB, then copies it
    with pytest.raises(InputError, match="inflates to more than 1,000,000 bytes"):
        decode_dicom(deflated_bomb(16 * MB), None, LIMITS, max_bytes=1_000_000)


def test_deflated_dicom_within_the_cap_decodes_like_its_plain_twin():
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    volume = np.stack([frame(i, (i, i)) for i in range(0, 40, 10)])
    plain = dicom(volume.tobytes(), 64, 64, 4, ExplicitVRLittleEndian, WindowCenter=300, WindowWidth=600)
    deflated = dicom(volume.tobytes(), 64, 64, 4, DeflatedExplicitVRLittleEndian, WindowCenter=300, WindowWidth=600)
    assert len(deflated) < len(plain) // 4
    for index in range(4):
        assert np.array_equal(decode_dicom(deflated, index, LIMITS), decode_dicom(plain, index, LIMITS))
    with pytest.raises(InputError) as e:
        decode_dicom(deflated, 0, LIMITS, max_bytes=4 * 64 * 64 * 2 - 1)  # the pixel data alone is larger
    assert e.value.status == 413


# -------------------------------------------------------------------------------------------------------- NIfTI


def nifti_bytes(volume: np.ndarray, gz: bool = True, klass=None, slope=None, inter=None) -> bytes:
    import nibabel as nib

    img = (klass or nib.Nifti1Image)(volume, np.eye(4))
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def whole_volume_path(data: bytes, slice_index: int) -> np.ndarray:
    """What decode_nifti did before it read single slices: the whole volume as float32, then one slice."""
    import nibabel as nib

    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    klass = nib.Nifti2Image if raw[4:8] == b"n+2\x00" else nib.Nifti1Image
    img = klass.from_bytes(raw)
    volume = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    return window_to_uint8(np.rot90(volume[:, :, slice_index]))


NIFTI_KINDS = [(dtype, None) for dtype in (np.float32, np.float64)] + [
    (dtype, scaling) for dtype in (np.uint8, np.int16, np.uint16) for scaling in (None, (2.5, -10.0))
]  # nibabel stores float data unscaled


@pytest.mark.parametrize("dtype, scaling", NIFTI_KINDS)
@pytest.mark.parametrize("two", [False, True])
def test_nifti_slice_is_the_whole_volume_paths_slice(dtype, scaling, two):
    import nibabel as nib

    scaling = scaling or (None, None)
    volume = (np.random.default_rng(1).random((40, 30, 6)) * 900).astype(dtype)
    klass = nib.Nifti2Image if two else nib.Nifti1Image
    for gz in (True, False):
        data = nifti_bytes(volume, gz, klass, *scaling)
        for k in (0, 3, 5):
            assert np.array_equal(decode_nifti(data, k, LIMITS, 10**8), whole_volume_path(data, k))


def test_large_nifti_reads_one_slice():
    x = np.arange(512, dtype=np.int16)
    volume = x[:, None, None] + 2 * x[None, :, None] + 3 * np.arange(400, dtype=np.int16)[None, None, :]
    volume[100:140, 200:260, 397] = 9000
    expected = window_to_uint8(np.rot90(volume[:, :, 397].astype(np.float32)))
    data = nifti_bytes(volume)  # 512x512x400 int16: 200 MB gunzipped, 400 MB as a float32 volume
    del volume
    assert len(data) < 40 * MB
    budget = Budget(512 * 512)
    with memory_growth() as growth:
        out = decode_nifti(data, 397, LIMITS, max_bytes=300 * MB, budget=budget)
    assert np.array_equal(out, expected)
    assert out.shape == (512, 512) and out[512 - 260 : 512 - 200, 100:140].min() == 255
    assert budget.used == 512 * 512
    # The old path held the 200 MB gunzipped file and the 400 MB float32 volume.
    assert growth.peak < 40 * MB, growth
    with pytest.raises(InputError, match="would bring this request to 524,288 pixels"):
        decode_nifti(data, 0, LIMITS, max_bytes=300 * MB, budget=budget)
    with pytest.raises(InputError, match="decompresses to more than") as e:
        decode_nifti(data, 0, LIMITS, max_bytes=100 * MB)
    assert e.value.status == 413


def test_truncated_nifti_is_still_refused():
    raw = nifti_bytes(np.random.default_rng(2).integers(0, 999, (40, 30, 5), dtype=np.int16), gz=False)
    for data in (raw[:-1], gzip.compress(raw[:-1]), gzip.compress(raw)[:-20]):
        with pytest.raises(InputError, match="could not read the NIfTI voxels") as e:
            decode_nifti(data, 0, LIMITS, 10**8)
        assert e.value.status == 400
