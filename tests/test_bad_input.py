"""The bad-input corpus: every endpoint of the suite, through the gateway, gets every kind of unusable request.

Each must answer 4xx with ``{"error": <plain words>}``; afterwards every service is still ready and answers a good
request (nothing crashed, nothing was lost), and the server log holds neither a traceback nor anything the
requests carried (each carries a marker in its text, file names or fields).
"""

from __future__ import annotations

import io
import json
import socket
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bytes
from tests.test_asr_service import wav_bytes
from tests.test_tumor_service import PYDICOM_MR, nifti, no_pixels_dicom

pytestmark = pytest.mark.http

MARKER = "PRIVATE-7f3a9c"  # stands for a patient's name or a user's text: must never reach a log

ROUTES = {
    "malaria": ("/v1/malaria/classify", "image"),
    "malaria-batch": ("/v1/malaria/classify/batch", "images"),
    "tumor": ("/v1/tumor/detect", "image"),
    "asr": ("/v1/asr/transcribe", "audio"),
    "keyphrase": ("/v1/keyphrase/extract", None),
    "palette": ("/v1/palette/extract", "image"),
}
IMAGE_ROUTES = ("malaria", "malaria-batch", "tumor", "palette")
FILE_ROUTES = (*IMAGE_ROUTES, "asr")


def _image(fmt: str = "PNG", size: int = 64) -> bytes:
    rng = np.random.default_rng(1)
    return png_bytes(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), fmt=fmt)


def _bomb() -> bytes:
    """6000x6000 one-bit pixels in 4 kB: small on the wire, 36 million pixels once decoded."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")
    return buf.getvalue()


def _corrupt_png() -> bytes:
    data = bytearray(_image())
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 60] = b"\xff" * 40  # compressed pixels destroyed, headers intact
    return bytes(data)


def _file(route: str, data: bytes, ctype: str = "application/octet-stream") -> dict:
    return {"files": {ROUTES[route][1]: (f"{MARKER}.bin", data, ctype)}}


def _raw(data: bytes, ctype: str) -> dict:
    return {"content": data, "headers": {"content-type": ctype}}


def corpus() -> list[tuple[str, str, dict, int]]:
    """(case, route, httpx arguments, expected status)."""
    cases: list[tuple[str, str, dict, int]] = []
    for route in ROUTES:
        cases += [
            ("wrong content type", route, _raw(f"{MARKER}".encode(), "text/csv"), 415),
            ("no content type", route, {"content": MARKER.encode()}, 415),
            ("JSON cut short", route, _raw(b'{"x": "' + MARKER.encode(), "application/json"), 400),
            ("JSON not an object", route, _raw(json.dumps([MARKER]).encode(), "application/json"), 400),
            (
                "JSON invalid UTF-8",
                route,
                _raw(b'{"text": "\xff\xfe' + MARKER.encode() + b'"}', "application/json"),
                400,
            ),
        ]
    for route in FILE_ROUTES:
        field = ROUTES[route][1]
        cases += [
            ("zero bytes", route, _file(route, b""), 400),
            ("JSON field missing", route, {"json": {"other": MARKER}}, 400),
            (
                "JSON not base64",
                route,
                {"json": {field: [MARKER + "%%"] if route == "malaria-batch" else MARKER + "%%"}},
                400,
            ),
            (
                "multipart boundary broken",
                route,
                _raw(b"--b\r\n" + MARKER.encode(), "multipart/form-data; boundary=b"),
                400,
            ),
            ("multipart wrong field", route, {"files": {"other": (MARKER, _image())}}, 400),
        ]
    for route in IMAGE_ROUTES:
        cases += [
            ("text as an image", route, _file(route, f"dear {MARKER}, results".encode(), "image/png"), 415),
            ("truncated PNG", route, _file(route, _image()[:300]), 400),
            ("truncated JPEG", route, _file(route, _image("JPEG")[:400]), 400),
            ("corrupt PNG", route, _file(route, _corrupt_png()), 400),
            ("decompression bomb", route, _file(route, _bomb()), 413),
            ("image too small", route, _file(route, png_bytes(np.zeros((2, 2, 3), np.uint8))), 422),
        ]
    cases += [
        ("over 10 MB", "malaria", _raw(b"\x89PNG" + b"\x00" * (11 * 1024 * 1024), "image/png"), 413),
        ("too many images", "malaria-batch", {"json": {"images": [""] * 300}}, 413),
        ("Grad-CAM flag not boolean", "malaria", {**_file("malaria", _image()), "params": {"gradcam": "maybe"}}, 422),
        ("DICOM without pixels", "tumor", _raw(no_pixels_dicom(), "application/dicom"), 422),
        ("DICOM truncated", "tumor", _raw(PYDICOM_MR.read_bytes()[:3000], "application/dicom"), 400),
        ("NIfTI 4-D", "tumor", _raw(nifti(np.ones((20, 20, 2, 3), np.float32)), "application/octet-stream"), 422),
        (
            "NIfTI slice out of range",
            "tumor",
            {**_raw(nifti(np.ones((40, 40, 5), np.float32)), "application/octet-stream"), "params": {"slice_index": 9}},
            422,
        ),
        ("confidence out of range", "tumor", {**_file("tumor", _image()), "params": {"conf": 2}}, 422),
        ("text as audio", "asr", _file("asr", f"dear {MARKER}".encode(), "audio/wav"), 415),
        ("image as audio", "asr", _file("asr", _image(), "audio/wav"), 415),
        ("WAV cut inside its header", "asr", _raw(wav_bytes(np.zeros(16000, np.float32))[:20], "audio/wav"), 415),
        ("audio over 600 s", "asr", _raw(_long_wav(601), "audio/wav"), 413),
        ("invalid UTF-8 text", "keyphrase", _raw(b"caf\xe9 " + MARKER.encode(), "text/plain"), 400),
        ("text over 100,000 characters", "keyphrase", _raw((MARKER + " ") * 7200, "text/plain"), 413),
        ("text field not a string", "keyphrase", {"json": {"text": [MARKER]}}, 400),
        ("top_k out of range", "keyphrase", {"json": {"text": MARKER, "top_k": 1000}}, 422),
        ("n_colors out of range", "palette", {**_file("palette", _image()), "params": {"n_colors": 99}}, 422),
        ("n_colors not a number", "palette", {**_file("palette", _image()), "params": {"n_colors": "1e9"}}, 422),
        ("unknown method", "palette", {**_file("palette", _image()), "params": {"method": MARKER}}, 422),
    ]
    return cases


def _long_wav(seconds: int) -> bytes:
    """8 kHz 8-bit mono: 601 s in 4.8 MB (under the body limit, over the duration limit)."""
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * (8000 * seconds))
    return buf.getvalue()


CORPUS = corpus()


@pytest.fixture(scope="module")
def client(suite):
    with httpx.Client(base_url=suite[0], timeout=120) as c:
        yield c


@pytest.mark.parametrize("case, route, kwargs, status", CORPUS, ids=[f"{r}: {c}" for c, r, _, _ in CORPUS])
def test_every_bad_request_gets_a_4xx_with_a_message(client, case, route, kwargs, status):
    r = client.post(ROUTES[route][0], **kwargs)
    assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
    message = r.json()["error"]
    assert isinstance(message, str) and len(message) >= 10  # plain words (it may name the upload: its own data)


@pytest.mark.parametrize("route", ROUTES)
def test_declared_oversized_body_is_refused_before_it_is_sent(suite, route):
    """A Content-Length past any limit gets 413 at once: the server does not wait for (or buffer) the body."""
    url = urlsplit(suite[0])
    head = (
        f"POST {ROUTES[route][0]} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000000000\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(head.encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status == 413, reply[:300]
    assert b"exceeds the limit" in reply


def test_wrong_method_and_unknown_route(client):
    assert client.get(ROUTES["malaria"][0]).status_code == 405
    r = client.post("/v1/malaria/nothing-here", content=b"x")
    assert r.status_code == 404


def test_after_the_corpus_every_service_is_ready_and_serves_and_the_log_is_clean(client, suite):
    good = {
        "malaria": _file("malaria", _image(), "image/png"),
        "malaria-batch": {"files": [("images", ("a.png", _image())), ("images", ("b.png", _image("JPEG")))]},
        "tumor": _file("tumor", _image(), "image/png"),
        "asr": _raw(wav_bytes(np.zeros(16000, np.float32)), "audio/wav"),
        "keyphrase": _raw(b"Deep learning finds tumours in magnetic resonance images.", "text/plain"),
        "palette": _file("palette", _image(), "image/png"),
    }
    assert client.get("/readyz").status_code == 200
    for route, kwargs in good.items():
        r = client.post(ROUTES[route][0], **kwargs)
        assert r.status_code == 200, f"{route}: {r.text[:300]}"
    log = suite[1].read_text(errors="replace")
    assert MARKER not in log
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
