"""The palette service against a real ``bentoml serve``: a store entry built by the CLIs (generator trained briefly,
ONNX export with its parity check), palettes that find planted colours, every method and size, the three body
kinds, batching of generator calls, and every bad input as a 4xx."""

from __future__ import annotations

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.server import start_server, stop_server
from tasks import palette as P
from tests.conftest import entry_metadata, model_batch_counts, png_bytes
from training.datasets import swatches

pytestmark = pytest.mark.http
ROUTE = "/v1/palette/extract"


@pytest.fixture(scope="module")
def server(palette_store):
    proc, url, log = start_server("palette", {"max_body_mb": 2, "max_pixels": 4_000_000}, env=palette_store)
    yield url, log
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def planted():
    return swatches.generate(6, seed=31337)


def upload(data: bytes, name: str = "a.png", ctype: str = "image/png") -> dict:
    return {"image": (name, data, ctype)}


def test_health_openapi_and_default_method(client, palette_store):
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert ROUTE in spec["paths"]
    params = {p["name"] for p in spec["paths"][ROUTE]["post"]["parameters"]}
    assert {"n_colors", "method", "swatch"} <= params
    img = swatches.generate(1, seed=5)[0][0]
    body = client.post(ROUTE, files=upload(png_bytes(img))).json()
    meta = entry_metadata(palette_store, "palette:latest")
    assert body["method"] == meta["metrics"]["test"]["best_method"]  # the measured best, not a guess
    assert body["model"].startswith("palette:") and body["backend"].startswith("numpy+onnxruntime")


def test_palette_finds_the_planted_colours(client, planted):
    for img, colours in zip(*planted, strict=True):
        r = client.post(ROUTE, params={"n_colors": len(colours), "method": "kmedians"}, files=upload(png_bytes(img)))
        assert r.status_code == 200, r.text
        body = r.json()
        lab = np.array([c["lab"] for c in body["colors"]])
        assert P.distances(P.srgb_to_lab(colours), lab).min(1).max() < 10, body["colors"]
        shares = [c["share"] for c in body["colors"]]
        assert sum(shares) == pytest.approx(1, abs=1e-3) and shares == sorted(shares, reverse=True)
        for c in body["colors"]:
            assert c["hex"] == "#{:02x}{:02x}{:02x}".format(*c["rgb"])
            np.testing.assert_allclose(c["lab"], P.srgb_to_lab(np.uint8(c["rgb"])), atol=0.01)
        swatch = Image.open(io.BytesIO(base64.b64decode(body["swatch_png"])))
        assert swatch.format == "PNG" and swatch.size[1] == 80


@pytest.mark.parametrize("method", ["kmeans", "kmedians", "generator"])
@pytest.mark.parametrize("n", [2, 5, 12])
def test_every_method_and_size(client, method, n):
    img = np.asarray(swatches.photo("coffee.png"))
    r = client.post(ROUTE, params={"n_colors": n, "method": method, "swatch": "false"}, files=upload(png_bytes(img)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == method and body["n_colors"] == n and body["swatch_png"] is None
    assert 1 <= len(body["colors"]) <= n and (body["width"], body["height"]) == (img.shape[1], img.shape[0])
    if method != "generator":  # the clustering methods fill every slot on a photo
        assert len(body["colors"]) == n


def test_raw_json_and_multipart_bodies_agree(client):
    arr = np.asarray(swatches.photo("rocket.jpg").resize((1024, 768)))
    data = png_bytes(arr, fmt="JPEG", quality=90)
    a = client.post(ROUTE, files=upload(data, "r.jpg", "image/jpeg")).json()
    b = client.post(ROUTE, content=data, headers={"content-type": "image/jpeg"}).json()
    c = client.post(ROUTE, json={"image": base64.b64encode(data).decode(), "n_colors": 5}).json()
    assert a["colors"] == b["colors"] == c["colors"]  # deterministic, whichever way the image came
    assert (a["width"], a["height"]) == (1024, 768)  # the size of the upload, not of the reduced decode
    d = client.post(ROUTE, json={"image": base64.b64encode(data).decode(), "n_colors": 3, "method": "kmeans"}).json()
    assert d["method"] == "kmeans" and len(d["colors"]) == 3


def test_concurrent_generator_requests_are_batched_and_answered_correctly(client):
    images = [png_bytes(im) for im in swatches.generate(8, seed=99)[0]]
    params = {"method": "generator", "swatch": "false"}
    expected = [client.post(ROUTE, params=params, files=upload(d)).json()["colors"] for d in images]
    before = batch_counts(client)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: client.post(ROUTE, params=params, files=upload(images[i % 8])), range(64)))
    assert all(r.status_code == 200 for r in got)
    for i, r in enumerate(got):
        for c, e in zip(r.json()["colors"], expected[i % 8], strict=True):
            assert np.abs(np.subtract(c["rgb"], e["rgb"])).max() <= 1  # batched fp32 maths may round differently
    calls, singles = (a - b for a, b in zip(batch_counts(client), before, strict=True))
    assert calls < 64 and singles < calls


def batch_counts(client) -> tuple[float, float]:
    return model_batch_counts(client.get("/metrics").text, "palette")


GOOD = png_bytes(np.full((32, 32, 3), 128, np.uint8))
BIG = png_bytes((np.random.default_rng(0).random((900, 900, 3)) * 255).astype(np.uint8))  # over 2 MB


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"files": upload(b"")}, 400, "empty"),
        ({"files": upload(b"hello, I am text", "a.txt", "text/plain")}, 415, "not a readable image"),
        ({"files": upload(png_bytes(np.zeros((40, 40, 3), np.uint8), fmt="GIF"), "a.gif")}, 415, "GIF"),
        ({"files": upload(png_bytes(np.zeros((4, 4, 3), np.uint8)))}, 422, "too small"),
        ({"files": upload(png_bytes(np.zeros((2100, 2100), np.uint8)))}, 413, "2100x2100"),
        ({"files": upload(BIG)}, 413, "exceeds the limit"),
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"json": {"image": "@@not base64@@"}}, 400, "invalid base64"),
        ({"json": {"picture": "aGk="}}, 400, "'image' field"),
        ({"params": {"n_colors": 1}, "files": upload(GOOD)}, 422, "n_colors"),
        ({"params": {"n_colors": 13}, "files": upload(GOOD)}, 422, "n_colors"),
        ({"params": {"method": "median-cut"}, "files": upload(GOOD)}, 422, "method"),
        ({"json": {"image": base64.b64encode(GOOD).decode(), "n_colors": "five"}}, 422, "n_colors"),
        ({"json": {"image": base64.b64encode(GOOD).decode(), "method": "gan"}}, 422, "method: Input should be"),
        ({"json": {"image": base64.b64encode(GOOD).decode(), "swatch": "maybe"}}, 422, "swatch"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, words):
    r = client.post(ROUTE, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_truncated_and_corrupt_images_are_refused(client):
    jpeg = png_bytes(np.asarray(swatches.photo("coffee.png")), fmt="JPEG")
    for data in (png_bytes(np.asarray(swatches.photo("coffee.png")))[:-3000], jpeg[: len(jpeg) // 2]):
        r = client.post(ROUTE, files=upload(data))
        assert r.status_code == 400 and "truncated" in r.json()["error"], r.text


def test_flat_image_gives_its_one_colour(client):
    r = client.post(ROUTE, params={"n_colors": 6}, files=upload(GOOD))
    assert r.status_code == 200
    colours = r.json()["colors"]
    assert [c["rgb"] for c in colours] == [[128, 128, 128]] and colours[0]["share"] == 1


def test_service_survives_bad_input_and_logs_no_payload(client, server):
    marker = "PATIENT-7f3a-SECRET"
    client.post(ROUTE, files=upload(marker.encode() * 10, f"{marker}.png"))
    client.post(ROUTE, json={"image": base64.b64encode(marker.encode()).decode()})
    assert client.post(ROUTE, files=upload(GOOD)).status_code == 200
    log = server[1].read_text()
    assert marker not in log
    assert re.search(
        r'^rejected_requests_total\{status="4\d\d",task="palette"\} [1-9]', client.get("/metrics").text, re.M
    )
