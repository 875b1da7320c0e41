"""The shared pipeline on real servers (``bentoml serve`` at default limits): Grad-CAM under concurrency, decoder
bombs within the body limit, and ``/livez`` while heavy requests run."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from benchmarks.server import start_server, stop_server
from tests.conftest import png_bytes

pytestmark = pytest.mark.http
MB = 1024 * 1024


@pytest.fixture(scope="module")
def malaria(store):
    proc, url, _log = start_server("malaria", {}, env=store)  # default limits: 10 MB bodies, 25 Mpx images
    yield url, proc
    stop_server(proc)


@pytest.fixture(scope="module")
def tumor(tumor_store):
    proc, url, _log = start_server("tumor", {}, env=tumor_store)  # default limits: 64 MB bodies, 25 Mpx slices
    yield url, proc
    stop_server(proc)


class PeakRss:
    """The peak resident memory of a server's processes, sampled every few milliseconds while in use."""

    def __init__(self, proc) -> None:
        root = psutil.Process(proc.pid)
        self.procs = [root, *root.children(recursive=True)]
        self.base = self.rss()
        self.peak = self.base
        self.stop = threading.Event()

    def rss(self) -> int:
        total = 0
        for p in self.procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def __enter__(self) -> PeakRss:
        def sample() -> None:
            while not self.stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.003)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / MB


def cells(n: int) -> list[bytes]:
    from training.datasets.cells import generate

    images, _ = generate(n, seed=777)
    return [png_bytes(im) for im in images]


def heatmap(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["gradcam"]["heatmap_png"]))), np.int16)


def placed_cells(n: int) -> list[bytes]:
    """Cells at different places on a dark 192 px field: each image's Grad-CAM lights up somewhere else."""
    from training.datasets.cells import generate

    crops, _ = generate(n, seed=778)
    out = []
    for i, crop in enumerate(crops):
        field = np.full((192, 192, 3), 12, np.uint8)
        cell = np.asarray(Image.fromarray(crop).resize((80, 80)))
        y, x = (i % 4) * 37, (i // 4) * 37
        field[y : y + 80, x : x + 80] = cell
        out.append(png_bytes(field))
    return out


def test_concurrent_gradcam_answers_are_each_their_own_image(malaria):
    url, _ = malaria
    images = placed_cells(16)
    with httpx.Client(base_url=url, timeout=120) as c:
        alone = [c.post("/v1/malaria/classify?gradcam=true", files={"image": ("c.png", b)}).json() for b in images]
        with ThreadPoolExecutor(16) as pool:
            together = list(
                pool.map(lambda b: c.post("/v1/malaria/classify?gradcam=true", files={"image": ("c.png", b)}), images)
            )
        assert [r.status_code for r in together] == [200] * 16
        for a, t in zip(alone, together, strict=True):
            assert np.abs(heatmap(a) - heatmap(t.json())).max() <= 2  # the same heatmap, up to rounding
        # (the tiny test model's maps may all look alike: tests/test_classifier_gradcam.py proves the same on a
        # model whose maps differ, called from 16 threads at once)
        # the batch route, batches of 1, 2, 3, 4 and 6 images at once
        sizes, start = [1, 2, 3, 4, 6], 0
        groups = []
        for n in sizes:
            groups.append(list(range(start, start + n)))
            start += n

        def batch(idx: list[int]) -> httpx.Response:
            files = [("images", (f"{i}.png", images[i])) for i in idx]
            return c.post("/v1/malaria/classify/batch?gradcam=true", files=files)

        with ThreadPoolExecutor(len(groups)) as pool:
            answers = list(pool.map(batch, groups))
    for idx, r in zip(groups, answers, strict=True):
        assert r.status_code == 200, r.text
        for i, item in zip(idx, r.json()["results"], strict=True):
            assert np.abs(heatmap(alone[i]) - heatmap(item)).max() <= 2


def test_a_batch_of_flat_5000px_pngs_is_refused_by_the_budget_within_bounded_memory(malaria):
    url, proc = malaria
    flat = png_bytes(np.full((5000, 5000, 3), 90, np.uint8))  # ~70 kB that decodes to 75 MB
    assert len(flat) < 200_000
    files = [("images", (f"{i}.png", flat)) for i in range(60)]  # ~4.5 GB decoded, within the 10 MB body limit
    with PeakRss(proc) as mem, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/malaria/classify/batch", files=files)
    assert r.status_code == 413, r.text
    assert "max_request_pixels" in r.json()["error"]
    assert mem.growth_mb < 300, mem.growth_mb


def test_a_multipart_body_near_the_limit_is_served_within_bounded_memory(malaria):
    url, proc = malaria
    rng = np.random.default_rng(0)
    noisy = png_bytes(rng.integers(0, 255, (1100, 1100, 3), np.uint8))  # ~3.6 MB of incompressible pixels
    files = [("images", (f"{i}.png", noisy)) for i in range(2)]
    with PeakRss(proc) as mem, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/malaria/classify/batch", files=files)
    assert r.status_code == 200, r.text
    assert mem.growth_mb < 300, mem.growth_mb


def dicom_frames(n: int, side: int = 64) -> bytes:
    """An RLE-compressed multi-frame DICOM: ``n`` small frames, frame k filled with k % 200."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "MR", side, side, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    frames = (np.arange(n, dtype=np.uint16) % 200)[:, None, None] * np.ones((1, side, side), np.uint16)
    frames[:, : side // 2] += 50
    ds.PixelData = frames.tobytes()
    ds.compress(RLELossless, frames)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_a_4000_frame_dicom_decodes_one_frame_within_bounded_memory(tumor):
    url, proc = tumor
    data = dicom_frames(4000)
    with PeakRss(proc) as mem, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/tumor/detect?slice_index=3999", content=data, headers={"content-type": "application/dicom"})
        out = c.post("/v1/tumor/detect?slice_index=4000", content=data, headers={"content-type": "application/dicom"})
    assert r.status_code == 200, r.text
    assert r.json()["input_format"] == "dicom" and r.json()["slice_index"] == 3999
    assert out.status_code == 422 and "4000" in out.json()["error"]
    assert mem.growth_mb < 300, mem.growth_mb


def test_a_large_nifti_volume_is_read_one_slice_within_bounded_memory(tumor):
    import nibabel as nib

    url, proc = tumor
    volume = np.zeros((512, 512, 300), np.int16)
    volume[100:200, 100:200, 150] = 1000
    img = nib.Nifti1Image(volume, np.eye(4))
    data = gzip.compress(img.to_bytes(), compresslevel=1)  # ~150 MB of voxels in a small body
    assert len(data) < 8 * MB
    with PeakRss(proc) as mem, httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/tumor/detect?slice_index=150", content=data, headers={"content-type": "application/gzip"})
    assert r.status_code in (200, 413), r.text
    if r.status_code == 413:
        assert "budget" in r.json()["error"] or "limit" in r.json()["error"] or "more than" in r.json()["error"]
    assert mem.growth_mb < 300, mem.growth_mb


def test_livez_answers_while_heavy_requests_run(tumor, malaria):
    """Decoding and drawing a 25 Mpx slice takes seconds: work on the event loop would hold /livez for as long.
    The bound is a fraction of the heavy request, not a fixed time, so that a loaded 2-core machine passes and a
    blocked loop does not."""
    tumor_url, _ = tumor
    malaria_url, _ = malaria
    rng = np.random.default_rng(1)
    big = png_bytes(rng.integers(0, 255, (5000, 5000), np.uint8))  # 25 Mpx of noise: seconds to decode and draw
    batch = [("images", (f"{i}.png", b)) for i, b in enumerate(cells(8))]
    stop = threading.Event()

    heavy_s: list[float] = []

    def heavy_tumor() -> list[int]:
        with httpx.Client(base_url=tumor_url, timeout=120) as c:
            start = time.perf_counter()
            code = c.post("/v1/tumor/detect?annotate=true", files={"image": ("s.png", big)}).status_code
            heavy_s.append(time.perf_counter() - start)
            return [code]

    def heavy_malaria() -> list[int]:
        codes = []
        with httpx.Client(base_url=malaria_url, timeout=120) as c:
            while not stop.is_set():
                codes.append(c.post("/v1/malaria/classify/batch?gradcam=true", files=batch).status_code)
        return codes

    def probe(url: str) -> list[float]:
        times = []
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                start = time.perf_counter()
                assert c.get("/livez").status_code == 200
                times.append(time.perf_counter() - start)
                time.sleep(0.02)
        return times

    with ThreadPoolExecutor(6) as pool:
        probes = [pool.submit(probe, tumor_url), pool.submit(probe, malaria_url)]
        loads = [pool.submit(heavy_tumor), pool.submit(heavy_tumor), pool.submit(heavy_malaria)]
        assert all(code == 200 for code in loads[0].result() + loads[1].result())
        stop.set()
        assert all(code == 200 for code in loads[2].result())
        for p in probes:
            times = sorted(p.result())
            assert len(times) > 20
            p99 = times[int(0.99 * (len(times) - 1))]
            bound = min(0.5, min(heavy_s) / 5)
            assert p99 < bound, f"/livez p99 {p99 * 1000:.0f} ms over {len(times)} probes (heavy {min(heavy_s):.1f} s)"
