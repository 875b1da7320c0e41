"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright, against the gateway serving
all five tasks from one store (the small models the other tests build). Each panel's happy path and one error
path; screenshots land in ``artifacts/web/``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.server import ROOT
from tasks import TASKS
from tests.conftest import png_bytes

pytestmark = pytest.mark.http
ARTIFACTS = ROOT / "artifacts" / "web"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root, in a sandbox with no network: no sandbox, no GPU, none of Chromium's own background connections.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",  # grant the microphone
    "--use-fake-device-for-media-stream",  # a synthetic microphone (a beep)
]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make setup` installs Debian's chromium package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, suite, request):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside = []
    page.on("request", lambda r: None if r.url.startswith((suite[0], "data:")) else outside.append(r.url))
    page.goto(suite[0] + "/")
    page.wait_for_selector("body[data-ready=true]")  # the classifier panels come from /tasks.json
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not outside, f"the page reached outside the suite: {outside}"


def file(name: str, data: bytes, mime: str) -> dict:
    return {"name": name, "mimeType": mime, "buffer": data}


def open_panel(page, name: str) -> None:
    page.click(f"nav button[data-panel={name}]")
    assert page.is_visible(f"#{name}")


def error_text(page, panel: str) -> str:
    page.wait_for_selector(f"#{panel} .error:not([hidden])")
    return page.inner_text(f"#{panel} .error")


def test_page_shows_the_clinical_notice_and_every_panel(page):
    assert "do not" in page.inner_text("#notice") and "replace" in page.inner_text("#notice")
    assert "not stored" in page.inner_text("#notice")
    for name in TASKS:  # image classifiers included: their panels come from the registry
        open_panel(page, name)


def test_tumour_slice_comes_back_drawn(page):
    """The slice is shown as the server drew it, with a table of boxes or the no-finding message (the small test
    model need not find the lesion: boxes against truth are tested in test_tumor_service.py)."""
    from training.datasets.mri import generate

    images, targets, _ = generate(6, seed=4242)
    k = next(i for i, t in enumerate(targets) if t)
    open_panel(page, "tumor")
    page.set_input_files("#tumor-file", files=[file("slice.png", png_bytes(images[k]), "image/png")])
    page.wait_for_selector("#tumor-image:not([hidden])")
    assert page.get_attribute("#tumor-image", "src").startswith("data:image/png;base64,")
    assert page.is_visible("#tumor-boxes") or page.is_visible("#tumor-none")
    assert page.is_hidden("#tumor .error")
    assert page.inner_text("#status").startswith("tumor:")


def test_tumour_error_in_plain_words(page):
    open_panel(page, "tumor")
    page.set_input_files("#tumor-file", files=[file("notes.png", b"these are my notes", "image/png")])
    assert "not supported" in error_text(page, "tumor")


def test_malaria_cells_with_gradcam(page, cells):
    open_panel(page, "malaria")
    uploads = [file(f"cell{i}.png", png_bytes(img), "image/png") for i, img in enumerate(cells[0][:3])]
    page.set_input_files("#malaria-files", files=uploads)
    page.wait_for_selector("#malaria-cells figure >> nth=2")
    captions = page.locator("#malaria-cells figcaption").all_inner_texts()
    assert len(captions) == 3 and all(("Parasitized" in c) != ("Uninfected" in c) for c in captions)
    sources = page.locator("#malaria-cells img").evaluate_all("imgs => imgs.map(i => i.src)")
    assert all(s.startswith("data:image/png") for s in sources)


@pytest.mark.parametrize("task", [n for n, s in TASKS.items() if s.kind == "image-classification" and n != "malaria"])
def test_every_other_classifier_gets_its_panel_from_the_registry(page, task):
    from tasks.spec import resolve

    spec = TASKS[task]
    images, _ = resolve(spec.synthetic)(2, 99)
    open_panel(page, task)
    assert page.inner_text(f"#{task} h2") == (spec.heading or spec.title or task)
    page.set_input_files(
        f"#{task}-files", files=[file(f"{i}.png", png_bytes(im), "image/png") for i, im in enumerate(images)]
    )
    page.wait_for_selector(f"#{task}-cells figure >> nth=1")
    captions = page.locator(f"#{task}-cells figcaption").all_inner_texts()
    assert len(captions) == 2 and all(sum(c.startswith(label + " ") for label in spec.labels) == 1 for c in captions)


def test_malaria_error_in_plain_words(page):
    open_panel(page, "malaria")
    tiny = png_bytes(np.zeros((4, 4, 3), np.uint8))
    page.set_input_files("#malaria-files", files=[file("tiny.png", tiny, "image/png")])
    assert "too small" in error_text(page, "malaria")


def test_speech_upload_and_recording(page):
    from benchmarks.speech import wav_bytes
    from training.datasets.korean_speech import generate

    audio, _ = generate(1, seed=77, held_out=True)
    open_panel(page, "asr")
    page.fill("#asr-prompt", "혈압, 두통")  # the vocabulary prompt goes beside the file in the form
    # (Chromium does not show Playwright the body of a form with a file, so the form the page builds is read)
    assert page.evaluate("() => speechForm([new File(['x'], 'a.wav')]).get('prompt')") == "혈압, 두통"
    page.set_input_files("#asr-file", files=[file("clip.wav", wav_bytes(audio[0], 16_000), "audio/wav")])
    page.wait_for_function("document.getElementById('asr-text').textContent.length > 0")
    assert page.locator("#asr-segments li").count() >= 1 or page.inner_text("#asr-text") == "(no speech recognised)"
    assert page.inner_text("#status").startswith("asr:")
    # the microphone (Chromium's synthetic one): record, stop, and the recording goes to the same route
    page.evaluate("document.getElementById('asr-text').textContent = ''")
    page.click("#asr-record")
    page.wait_for_selector("#asr-record:text('Stop')")
    page.wait_for_timeout(1500)
    page.click("#asr-record")
    page.wait_for_function("document.getElementById('asr-text').textContent.length > 0")
    assert page.is_hidden("#asr .error")


def test_speech_error_in_plain_words(page):
    open_panel(page, "asr")
    page.set_input_files("#asr-file", files=[file("clip.wav", b"not audio at all", "audio/wav")])
    assert "could not read" in error_text(page, "asr").lower() or "not supported" in error_text(page, "asr")


def test_keyphrases_are_marked_in_place(page):
    from training.datasets.abstracts import generate

    doc = next(d for d in generate(10, seed=99, held_out=True) if d.language == "en")
    text = "🙂 " + doc.text  # an emoji first: offsets count code points, JavaScript strings UTF-16 units
    open_panel(page, "keyphrase")
    page.fill("#keyphrase-text", text)
    page.click("#keyphrase-go")
    page.wait_for_selector("#keyphrase-marked mark")
    marks = page.locator("#keyphrase-marked mark").all_inner_texts()
    listed = page.locator("#keyphrase-list li").all_inner_texts()
    assert marks and all(any(li.startswith(m + " (") for li in listed) for m in marks)
    assert page.inner_text("#keyphrase-marked").replace("\n", " ").split() == text.split()  # the text, unchanged


def test_keyphrase_error_in_plain_words(page):
    open_panel(page, "keyphrase")
    page.fill("#keyphrase-text", "word " * 25_000)  # 125,000 characters: over the default limit of 100,000
    page.click("#keyphrase-go")
    assert "too large" in error_text(page, "keyphrase")


def test_palette_with_shares(page):
    from training.datasets.swatches import photo

    open_panel(page, "palette")
    page.fill("#palette-n", "4")
    data = png_bytes(np.asarray(photo("coffee.png")), fmt="JPEG", quality=90)
    page.set_input_files("#palette-file", files=[file("coffee.jpg", data, "image/jpeg")])
    page.wait_for_selector("#palette-swatch:not([hidden])")
    chips = page.locator("#palette-colours li").all_inner_texts()
    assert len(chips) == 4 and all(c.startswith("#") and c.endswith("%") for c in chips)
    shares = [float(c.split("·")[1].strip(" %")) for c in chips]
    assert abs(sum(shares) - 100) < 1 and shares == sorted(shares, reverse=True)


def test_palette_error_in_plain_words(page):
    open_panel(page, "palette")
    page.fill("#palette-n", "13")
    black = png_bytes(np.zeros((40, 40, 3), np.uint8))
    page.set_input_files("#palette-file", files=[file("a.png", black, "image/png")])
    assert "cannot use this input" in error_text(page, "palette") and "n_colors" in error_text(page, "palette")


def test_gateway_documents_measures_and_forwards_every_task(suite, cells):
    import httpx

    with httpx.Client(base_url=suite[0], timeout=60) as client:
        assert client.get("/readyz").status_code == 200
        paths = client.get("/docs.json").json()["paths"]
        for route in ("malaria/classify", "malaria/classify/batch", "tumor/detect", "asr/transcribe"):
            assert f"/v1/{route}" in paths
        assert "/v1/keyphrase/extract" in paths and "/v1/palette/extract" in paths
        assert {p["name"] for p in paths["/v1/palette/extract"]["post"]["parameters"]} >= {"n_colors", "method"}
        assert client.get("/docs").status_code == 200 and "swagger" in client.get("/docs").text.lower()
        # the task's own answers pass through unchanged: its 4xx, its 404 for an unknown route
        r = client.post("/v1/keyphrase/extract", content=b"\xff\xfe", headers={"content-type": "text/plain"})
        assert r.status_code == 400 and "UTF-8" in r.json()["error"]
        assert client.get("/v1/palette/nothing-here").status_code == 404
        # metrics recorded inside the task processes show on the gateway's one /metrics
        image = {"image": ("cell.png", png_bytes(cells[0][0]), "image/png")}
        assert client.post("/v1/malaria/classify", files=image).json()["label"] in ("Parasitized", "Uninfected")
        text = client.get("/metrics").text
        assert 'rejected_requests_total{status="400",task="keyphrase"}' in text
        assert 'model_batch_size_count{task="malaria",version="malaria:' in text


def test_a_panel_says_its_model_is_building_then_works(browser, store, tmp_path, cells):
    """The gateway over an empty store while a demo build is under way (its status file as the builder writes
    it): the panel and its tab say building, with the epoch, and the panel's input waits; once the model lands
    in the store the panel turns ready and classifies."""
    import json
    import time

    from benchmarks.server import start_server, stop_server

    home = tmp_path / "home"
    home.mkdir()
    status = tmp_path / "status.json"
    building = {"state": "training", "epoch": 2, "epochs": 6, "started": time.time(), "expected_s": 300}
    status.write_text(json.dumps({"started": time.time(), "tasks": {"malaria": building}}))
    env = {**store, "BENTOML_HOME": str(home)}
    args = {"tasks": "malaria", "build_status": str(status), "poll_s": 0.3}
    proc, url, _ = start_server("gateway", args, env=env, wait_for="/livez")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url + "/")
        open_panel(page, "malaria")
        page.wait_for_selector("#malaria[data-model=building]")
        line = page.inner_text("#malaria .model-state")
        assert line.startswith("Building") and "training, epoch 2 of 6" in line and "about 5" in line, line
        assert page.is_disabled("#malaria-files")
        assert page.get_attribute("nav button[data-panel=malaria]", "data-model") == "building"  # " · building"
        shutil.copytree(Path(store["BENTOML_HOME"]) / "models", home / "models", dirs_exist_ok=True)  # it lands
        page.wait_for_selector("#malaria[data-model=ready]", timeout=90_000)
        assert page.inner_text("#malaria .model-state").startswith("Ready: serving malaria:")
        page.set_input_files("#malaria-files", files=[file("cell.png", png_bytes(cells[0][0]), "image/png")])
        page.wait_for_selector("#malaria-cells figure")
        assert page.inner_text("#malaria-cells figcaption").split()[0] in ("Parasitized", "Uninfected")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "building-then-ready.png"), full_page=True)
    finally:
        context.close()
        stop_server(proc)
