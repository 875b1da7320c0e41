"""Hostile input through the gateway: decoder bombs, malformed values, path tricks, WebSockets, slow clients,
metric flooding and files on the server read through ffmpeg. Every case builds its own bytes here.

Each case answers a 4xx naming its reason, or a correct answer; never a 5xx; within 5 s; the server's peak memory
grows by less than 300 MB; ``/readyz`` stays 200 throughout and the log holds no traceback.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.test_budget import deflated_bomb, dicom
from tests.test_pipeline_http import PeakRss

pytestmark = pytest.mark.http

DICOM, GZIP = "application/dicom", "application/gzip"


@dataclass
class Case:
    route: str
    body: dict  # httpx arguments
    status: tuple[int, ...]  # what may answer (4xx with ``words`` in its error, or 200)
    words: str = ""
    params: dict = field(default_factory=dict)


def wav(samples: np.ndarray, rate: int, float32: bool = True) -> bytes:
    """A mono WAV written by hand (float32 or 16-bit), so that any rate and any sample value can be sent."""
    data = samples.astype(np.float32 if float32 else np.int16).tobytes()
    width = 4 if float32 else 2
    fmt = struct.pack("<HHIIHH", 3 if float32 else 1, 1, rate, rate * width, width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def many_scans_jpeg(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: ``scans`` start-of-scan markers in a few kB."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG", progressive=True
    )
    data = buf.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * (scans - data.count(b"\xff\xda") + 1) + b"\xff\xd9"


def rle_frames(n: int, side: int) -> bytes:
    """An RLE DICOM of ``n`` frames of ``side`` x ``side`` zeros (8 bits): 256 kB a frame on the wire."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    header = np.zeros(16, "<u4")
    header[:2] = 1, 64  # one segment, right after the 64-byte header
    frame = header.tobytes() + bytes([129, 0]) * (side * side // 128)  # runs of 128 zeros
    return dicom(encapsulate([frame] * n), side, side, n, RLELossless, bits=8)


def dicom_with(**values) -> bytes:
    """A 64x64 MR slice (16 bits) with header elements ``values`` (pydicom checks them as they are set)."""
    from pydicom.uid import ExplicitVRLittleEndian

    return dicom(np.full((64, 64), 300, np.uint16).tobytes(), 64, 64, 1, ExplicitVRLittleEndian, **values)


def dicom_raw(keyword: str, value: str, **valid) -> bytes:
    """A slice whose ``keyword`` element holds ``value`` as written, valid or not (pydicom would refuse to write
    it): a UT element of that text, which holds anything, in place of the element's own VR."""
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    ds = pydicom.dcmread(io.BytesIO(dicom_with(**valid)))
    ds[tag_for_keyword(keyword)] = DataElement(tag_for_keyword(keyword), "UT", value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def mpeg4_dicom() -> bytes:
    """A slice in the MPEG-4 AVC/H.264 transfer syntax (video: not on the service's list)."""
    from pydicom.encaps import encapsulate

    return dicom(encapsulate([b"\0" * 64]), 64, 64, 1, "1.2.840.10008.1.2.4.102")


def malformed_lut_dicom() -> bytes:
    """A slice whose Modality LUT Sequence is empty of data (a LUT descriptor with no LUT)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(dicom_with()))
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    ds.ModalityLUTSequence = Sequence([item])
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def nifti_gz(shape: tuple[int, int, int]) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)).to_bytes(), compresslevel=1)


def exif_jpeg(orientation: int, size: tuple[int, int] = (320, 160)) -> bytes:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (size[1], size[0]), np.uint8)).convert("RGB")
    exif = img.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def deep_json(field_name: str, depth: int = 100_000) -> bytes:
    return (json.dumps(field_name) + ": " + "[" * depth + "]" * depth).join("{}").encode()


def raw(data: bytes, ctype: str) -> dict:
    return {"content": data, "headers": {"content-type": ctype}}


def speech() -> np.ndarray:
    from training.datasets.korean_speech import generate

    audio, _ = generate(1, seed=91, held_out=True)
    return audio[0]


JSON_ROUTES = {
    "/v1/malaria/classify": "image",
    "/v1/malaria/classify/batch": "images",
    "/v1/tumor/detect": "image",
    "/v1/palette/extract": "image",
    "/v1/asr/transcribe": "audio",
    "/v1/keyphrase/extract": "text",
}


def flat_png() -> bytes:
    return png_bytes(np.full((5000, 5000, 3), 90, np.uint8))  # ~70 kB, 25 Mpx


def cases() -> dict[str, Callable[[], Case]]:
    """Each case by name, built when its test runs (some take a second to make)."""
    noise = np.random.default_rng(2).normal(0, 0.1, 16000)
    out: dict[str, Callable[[], Case]] = {
        # decoder bombs
        "deflated DICOM, 3 GB inflated": lambda: Case(
            "/v1/tumor/detect", raw(deflated_bomb(3 << 30), DICOM), (413,), "inflates"
        ),
        "RLE DICOM, 8 frames of 4096x4096": lambda: Case(
            "/v1/tumor/detect", raw(rle_frames(8, 4096), DICOM), (200,), params={"slice_index": 7}
        ),
        "NIfTI gz, 250 MB of voxels": lambda: Case(
            "/v1/tumor/detect", raw(nifti_gz((512, 512, 960)), GZIP), (200, 413), params={"slice_index": 900}
        ),
        "25 Mpx PNG with Grad-CAM": lambda: Case(
            "/v1/malaria/classify", raw(flat_png(), "image/png"), (200,), params={"gradcam": "true"}
        ),
        "progressive JPEG of 3000 scans": lambda: Case(
            "/v1/malaria/classify", raw(many_scans_jpeg(3000), "image/jpeg"), (422,), "scans"
        ),
        # malformed values
        "integer of 5000 digits in a JSON field": lambda: Case(
            "/v1/keyphrase/extract",
            raw(b'{"text": "a text", "top_k": ' + b"7" * 5000 + b"}", "application/json"),
            (400,),
            "digits",
        ),
        "integer of 5000 digits in the query": lambda: Case(
            "/v1/keyphrase/extract", raw(b"a text", "text/plain"), (422,), "top_k", {"top_k": "7" * 5000}
        ),
        "lone surrogate in text": lambda: Case(
            "/v1/keyphrase/extract", raw(b'{"text": "abc \\ud800 def"}', "application/json"), (400,), "surrogate"
        ),
        "slice_index in Arabic-Indic digits": lambda: Case(
            "/v1/tumor/detect", raw(dicom_with(), DICOM), (422,), "slice_index", {"slice_index": "\u0661"}
        ),
        "slice_index of 5000 digits": lambda: Case(
            "/v1/tumor/detect", raw(dicom_with(), DICOM), (422,), "slice_index", {"slice_index": "9" * 5000}
        ),
        "DICOM RescaleSlope 'abc'": lambda: Case(
            "/v1/tumor/detect",
            raw(dicom_raw("RescaleSlope", "abc ", RescaleIntercept="-100"), DICOM),
            (400,),
            "rescale",
        ),
        "DICOM NumberOfFrames of 5000 digits": lambda: Case(
            "/v1/tumor/detect", raw(dicom_raw("NumberOfFrames", "9" * 5000), DICOM), (400,), "NumberOfFrames"
        ),
        "DICOM malformed Modality LUT Sequence": lambda: Case(
            "/v1/tumor/detect", raw(malformed_lut_dicom(), DICOM), (400,), "rescale"
        ),
        "DICOM in an MPEG-4 transfer syntax": lambda: Case(
            "/v1/tumor/detect",
            raw(mpeg4_dicom(), DICOM),
            (415,),
            "transfer syntax",
        ),
        # audio
        "WAV of NaN samples": lambda: Case(
            "/v1/asr/transcribe", raw(wav(np.full(16000, np.nan), 16000), "audio/wav"), (422,), "NaN"
        ),
        "WAV at 2 Hz": lambda: Case(
            "/v1/asr/transcribe", raw(wav(np.zeros(240), 2, False), "audio/wav"), (422,), "2 Hz"
        ),
        "WAV at 384 kHz": lambda: Case(
            "/v1/asr/transcribe", raw(wav(noise, 384_000), "audio/wav"), (422,), "384000 Hz"
        ),
        "base64 with line breaks": lambda: Case(
            "/v1/palette/extract",
            {"json": {"image": base64.encodebytes(png_bytes(np.zeros((64, 64, 3), np.uint8))).decode()}},
            (200,),
        ),
    }
    for route, name in JSON_ROUTES.items():
        out[f"JSON nested 100,000 deep: {route}"] = lambda route=route, name=name: Case(
            route, raw(deep_json(name), "application/json"), (400,), "deep"
        )
    return out


CASES = cases()


@pytest.fixture(scope="module")
def served(suite):
    """The gateway, a client, and a watcher that asks /readyz twice a second the whole time."""
    url, log, proc = suite
    failures: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                if (status := c.get("/readyz").status_code) != 200:
                    failures.append(status)
                stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, proc, failures
    stop.set()
    watcher.join()
    assert not failures, f"/readyz answered {failures} during the hostile corpus"
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_is_a_4xx_or_a_right_answer(served, name):
    client, proc, _ = served
    case = CASES[name]()
    with PeakRss(proc) as mem:
        start = time.perf_counter()
        r = client.post(case.route, params=case.params, **case.body)
        took = time.perf_counter() - start
    assert r.status_code in case.status, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert case.words.lower() in r.json()["error"].lower(), r.json()
    assert took < 5, took
    assert mem.growth_mb < 300, mem.growth_mb


def test_exif_orientation_is_applied_before_the_model(served):
    client, _, _ = served
    for orientation, (width, height) in ((1, (320, 160)), (6, (160, 320)), (8, (160, 320)), (3, (320, 160))):
        r = client.post("/v1/tumor/detect", **raw(exif_jpeg(orientation), "image/jpeg"))
        assert r.status_code == 200, r.text
        assert (r.json()["width"], r.json()["height"]) == (width, height), orientation
        assert all(b["x1"] <= width + 0.5 and b["y1"] <= height + 0.5 for b in r.json()["boxes"])


def test_dot_segments_and_undocumented_paths_reach_nothing_of_a_task(served):
    client, _, _ = served
    host, port = urlsplit(str(client.base_url)).hostname, urlsplit(str(client.base_url)).port
    for path in (
        "/v1/malaria/%2e%2e/%2e%2e/schema.json",
        "/v1/tumor/x/../../../metrics",
        "/v1/tumor/detect/../../../metrics",
        "/v1/malaria/./classify",
        "/v1/malaria/docs.json",
        "/v1/malaria/metrics",
    ):
        with socket.create_connection((host, port), timeout=10) as s:  # as sent: no client normalises it
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            status = s.recv(4096).split(b"\r\n", 1)[0]
        assert status.split()[1] == b"404", (path, status)


def test_websocket_upgrades_are_refused(served):
    client, _, _ = served
    host, port = urlsplit(str(client.base_url)).hostname, urlsplit(str(client.base_url)).port
    for path in ("/v1/malaria/classify", "/v1/nothing", "/"):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            status = s.recv(4096).split(b"\r\n", 1)[0]
        assert status.split()[1] in (b"403", b"404"), (path, status)


def test_metrics_do_not_grow_with_unknown_paths(served):
    client, _, _ = served
    paths = [f"/v1/malaria/{i}-" + "x" * 1000 for i in range(500)] + [f"/{i}-" + "y" * 1000 for i in range(500)]
    for p in (paths[0], paths[-1]):  # the "other" series exist from the first unknown path on
        client.get(p)
    client.get("/metrics")  # its own series (counted once answered) exist from here on too
    before = len(client.get("/metrics").content)
    for p in paths:
        assert client.get(p).status_code == 404
    after = len(client.get("/metrics").content)
    assert abs(after - before) <= 0.01 * before, (before, after)


def test_slow_headers_and_silent_connections_are_cut(served):
    """The default header deadline is 10 s: a client dripping a header line every 2 s, and one that sends
    nothing, each get 408 and a closed connection soon after it."""
    client, _, _ = served
    host, port = urlsplit(str(client.base_url)).hostname, urlsplit(str(client.base_url)).port
    results: dict[str, tuple[bytes, float]] = {}

    def drip() -> None:
        with socket.create_connection((host, port), timeout=30) as s:
            start = time.perf_counter()
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            for i in range(20):  # a header line every 2 s, until the server answers
                if select.select([s], [], [], 2)[0]:
                    break
                try:
                    s.sendall(f"X-Slow-{i}: y\r\n".encode())
                except OSError:
                    break
            results["drip"] = (s.recv(200), time.perf_counter() - start)

    def silent() -> None:
        with socket.create_connection((host, port), timeout=30) as s:
            start = time.perf_counter()
            results["silent"] = (s.recv(200), time.perf_counter() - start)

    threads = [threading.Thread(target=f) for f in (drip, silent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, (answer, took) in results.items():
        assert answer.startswith(b"HTTP/1.1 408"), (name, answer)
        assert 9 < took < 14, (name, took)


def test_speech_cannot_read_a_file_on_the_server(served, tmp_path):
    """A marker recording on the server's disk, named by every playlist, list and reference trick ffmpeg knows:
    it never shows in a transcript, a duration or an error."""
    client, _, _ = served
    audio = speech()
    marker = tmp_path / "marker-7f3a9c.wav"
    marker.write_bytes(wav(audio, 16000, False))
    seconds = round(len(audio) / 16000, 2)
    path = str(marker)
    tricks = {
        "HLS playlist": f"#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:{seconds},\n{path}\n#EXT-X-ENDLIST\n",
        "HLS playlist of file: URLs": f"#EXTM3U\n#EXTINF:{seconds},\nfile:{path}\n#EXT-X-ENDLIST\n",
        "concat list": f"ffconcat version 1.0\nfile '{path}'\n",
        "plain list of paths": f"{path}\n",
        "concat protocol": f"concat:{path}",
        "subfile protocol": f"subfile,,start,0,end,0,,:{path}",
    }
    bodies = {name: text.encode() for name, text in tricks.items()}
    bodies["HLS playlist behind an ID3 tag"] = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bodies["HLS playlist"]
    bodies["HLS playlist behind a WAV header"] = wav(np.zeros(0), 16000)[:44] + bodies["HLS playlist"]
    for name, body in bodies.items():
        r = client.post("/v1/asr/transcribe", files={"audio": ("list.m3u8", body)})
        assert r.status_code < 500, (name, r.text)
        assert path not in r.text and "marker" not in r.text, (name, r.text)
        if r.status_code == 200:
            assert abs(r.json()["duration_s"] - seconds) > 0.5 and not r.json()["text"], (name, r.json())
        else:
            assert json.loads(r.text)["error"], name
