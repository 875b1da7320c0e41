"""The malaria service over real HTTP (``bentoml serve`` on loopback), built by the CLIs: train -> export -> serve.

Good inputs in every format and transport, batching, Grad-CAM, agreement with the in-process model, and every
bad-input case answered with a 4xx and a message.
"""

from __future__ import annotations

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import get_task
from tasks.images import decode_image, preprocess
from tests.conftest import model_batch_counts, png_bytes

pytestmark = pytest.mark.http
CLASSIFY, BATCH = "/v1/malaria/classify", "/v1/malaria/classify/batch"
LABELS = {"Parasitized", "Uninfected"}


def upload(data: bytes, name: str = "cell.png", ctype: str = "image/png"):
    return {"image": (name, data, ctype)}


def probs(resp) -> np.ndarray:
    body = resp.json()
    return np.array([body["probabilities"][k] for k in ("Parasitized", "Uninfected")])


def test_health_and_readiness(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_openapi_documents_both_routes(client):
    spec = client.get("/docs.json").json()
    for route in (CLASSIFY, BATCH):
        op = spec["paths"][route]["post"]
        assert {"multipart/form-data", "application/json"} <= set(op["requestBody"]["content"])
        assert {"200", "400", "413", "415", "422"} <= set(op["responses"])
    schema = spec["components"]["schemas"]["ClassifyResponse"]["properties"]
    assert "description" in schema["model"] and "description" in schema["probabilities"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
def test_classify_each_format(client, cells, fmt):
    r = client.post(CLASSIFY, files=upload(png_bytes(cells[0][0], fmt=fmt), f"c.{fmt.lower()}"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] in LABELS and body["model"].startswith("malaria:")
    assert body["backend"] == "onnxruntime/cpu" and body["elapsed_ms"] > 0
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["probability"] == max(body["probabilities"].values())


def test_multipart_json_and_raw_bodies_agree(client, cells):
    data = png_bytes(cells[0][1])
    a = client.post(CLASSIFY, files=upload(data))
    b = client.post(CLASSIFY, json={"image": base64.b64encode(data).decode()})
    c = client.post(CLASSIFY, content=data, headers={"content-type": "image/png"})
    assert a.status_code == b.status_code == c.status_code == 200
    assert np.allclose(probs(a), probs(b), atol=1e-6) and np.allclose(probs(a), probs(c), atol=1e-6)


def test_service_matches_the_model_in_process(client, cells, store):
    """End to end: what the service answers is what the exported model says on the same bytes."""
    import onnxruntime as ort

    entry_dir = max(
        Path(store["BENTOML_HOME"], "models", "malaria").glob("*/model.onnx"), key=lambda p: p.stat().st_mtime
    )
    session = ort.InferenceSession(str(entry_dir), providers=["CPUExecutionProvider"])
    data = png_bytes(cells[0][2])
    malaria = get_task("malaria")  # the normalisation of its backbone's ImageNet weights
    x = preprocess([decode_image(data)], 64, malaria.mean, malaria.std)
    expected = session.run(None, {"images": x})[0][0]
    assert np.allclose(probs(client.post(CLASSIFY, files=upload(data))), expected, atol=1e-5)


def test_batch_route_matches_single_answers(client, cells):
    images = [png_bytes(im) for im in cells[0][:3]]
    files = [("images", (f"cell{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = client.post(BATCH, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2]
    assert [x["filename"] for x in results] == ["cell0.png", "cell1.png", "cell2.png"]
    for item, data in zip(results, images, strict=True):
        single = client.post(CLASSIFY, files=upload(data)).json()
        assert item["label"] == single["label"]
        assert abs(item["probability"] - single["probability"]) < 1e-5
    j = client.post(BATCH, json={"images": [base64.b64encode(d).decode() for d in images]})
    assert j.status_code == 200 and len(j.json()["results"]) == 3


def test_gradcam_returns_heatmap_and_overlay_at_image_size(client, cells):
    img = cells[0][3]
    r = client.post(CLASSIFY + "?gradcam=true", files=upload(png_bytes(img)))
    assert r.status_code == 200, r.text
    cam = r.json()["gradcam"]
    for key in ("heatmap_png", "overlay_png"):
        pic = Image.open(io.BytesIO(base64.b64decode(cam[key])))
        assert pic.format == "PNG" and pic.size == (img.shape[1], img.shape[0])
    assert client.post(CLASSIFY, files=upload(png_bytes(img))).json()["gradcam"] is None
    r = client.post(CLASSIFY, json={"image": base64.b64encode(png_bytes(img)).decode(), "gradcam": True})
    assert r.json()["gradcam"] is not None


@pytest.mark.parametrize("mode", ["P", "RGBA", "L", "I;16"])
def test_unusual_modes_are_served(client, cells, mode):
    r = client.post(CLASSIFY, files=upload(png_bytes(cells[0][4], mode=mode)))
    assert r.status_code == 200, r.text


def test_cmyk_jpeg_is_served(client, cells):
    r = client.post(CLASSIFY, files=upload(png_bytes(cells[0][4], mode="CMYK", fmt="JPEG"), "c.jpg", "image/jpeg"))
    assert r.status_code == 200, r.text


def test_concurrent_requests_get_their_own_answers_and_are_batched(client, cells):
    images = [png_bytes(im) for im in cells[0]]
    expected = [client.post(CLASSIFY, files=upload(d)).json()["probability"] for d in images]
    before = batch_counts(client)
    with ThreadPoolExecutor(24) as pool:
        got = list(pool.map(lambda i: client.post(CLASSIFY, files=upload(images[i % 12])), range(96)))
    assert all(r.status_code == 200 for r in got)
    assert all(abs(r.json()["probability"] - expected[i % 12]) < 1e-5 for i, r in enumerate(got))
    after = batch_counts(client)
    calls, singles = after[0] - before[0], after[1] - before[1]
    assert calls < 96 and singles < calls  # some model calls served several requests


def batch_counts(client) -> tuple[float, float]:
    return model_batch_counts(client.get("/metrics").text, "malaria")


BIG = png_bytes((np.random.default_rng(0).random((900, 900, 3)) * 255).astype(np.uint8))  # ~2.4 MB, over 2 MB


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"files": upload(b"")}, 400, "empty"),
        ({"files": upload(b"\x89PNG\r\n\x1a\n garbage")}, 400, "could not"),
        ({"files": upload(b"hello, I am text", "a.txt", "text/plain")}, 415, "not a readable image"),
        ({"files": upload(png_bytes(np.zeros((40, 40, 3), np.uint8), fmt="GIF"), "a.gif")}, 415, "GIF"),
        ({"files": upload(png_bytes(np.zeros((8, 8, 3), np.uint8)))}, 422, "too small"),
        ({"files": upload(png_bytes(np.zeros((2100, 2100), np.uint8)))}, 413, "2100x2100"),
        ({"files": upload(BIG)}, 413, "exceeds the limit"),
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"json": {"image": "@@not base64@@"}}, 400, "invalid base64"),
        ({"json": {"picture": "aGk="}}, 400, "'image' field"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid JSON"),
        ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "no file in field 'image'"),
        (
            {"files": [("image", ("a.png", b"x", "image/png")), ("image", ("b.png", b"y", "image/png"))]},
            400,
            "batch route",
        ),
        ({"json": {"image": "aGk=", "gradcam": "maybe"}}, 422, "gradcam: Input should be a valid boolean"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, words):
    r = client.post(CLASSIFY, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_truncated_png_is_refused(client, cells):
    r = client.post(CLASSIFY, files=upload(png_bytes(cells[0][0])[:-300]))
    assert r.status_code == 400 and "truncated" in r.json()["error"]


def test_batch_bad_inputs(client, cells):
    good = png_bytes(cells[0][0])
    too_many = [("images", (f"{i}.png", good, "image/png")) for i in range(9)]
    r = client.post(BATCH, files=too_many)
    assert r.status_code == 413 and "limit is 8" in r.json()["error"]
    mixed = [("images", ("ok.png", good, "image/png")), ("images", ("bad.png", b"junk", "image/png"))]
    r = client.post(BATCH, files=mixed)
    assert r.status_code == 415 and r.json()["error"].startswith("images[1] (bad.png)")
    r = client.post(BATCH, json={"images": []})
    assert r.status_code == 400
    r = client.post(BATCH, content=good, headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_service_survives_bad_input_and_logs_no_payload(client, server, cells):
    marker = "PATIENT-7f3a-SECRET"
    client.post(CLASSIFY, files=upload(marker.encode() * 10, f"{marker}.png"))
    client.post(CLASSIFY, json={"image": base64.b64encode(marker.encode()).decode()})
    assert client.post(CLASSIFY, files=upload(png_bytes(cells[0][0]))).status_code == 200
    log = server[1].read_text()
    assert marker not in log and base64.b64encode(marker.encode()).decode() not in log
    text = client.get("/metrics").text
    assert re.search(r'^rejected_requests_total\{status="4\d\d",task="malaria"\} [1-9]', text, re.M)
