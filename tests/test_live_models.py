"""Live model loading (services/versions.py) on a real server: a service with no model yet, a newer entry swapped
in while requests run, pinning, a corrupt new entry, and a task that answers before its model exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.server import start_server, stop_server
from tests.conftest import ROOT, png_bytes

PNG = png_bytes(np.random.default_rng(5).integers(0, 255, (40, 40, 3), dtype=np.uint8))
POLL = {"poll_s": 0.3}

# A new entry of the same task made from an existing one (its files, a new version): a real new store entry, as
# training writes it, without training again. Run in its own process: BentoML's store is process-wide.
CLONE = """
import shutil, sys
from pathlib import Path
import bentoml
src = bentoml.models.get(sys.argv[1])
with bentoml.models.create(src.tag.name, labels=src.info.labels, metadata=dict(src.info.metadata)) as m:
    for f in Path(src.path).iterdir():
        if f.name != "model.yaml":
            shutil.copy(f, m.path)
    if len(sys.argv) > 2:  # corrupt this file (same size, one byte flipped)
        p = Path(m.path) / sys.argv[2]
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
print(m.tag)
"""


def clone(env: dict[str, str], tag: str, corrupt: str | None = None) -> str:
    args = [sys.executable, "-c", CLONE, tag, *([corrupt] if corrupt else [])]
    r = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout.strip().splitlines()[-1]


def own_store(store: dict[str, str], dest: Path) -> dict[str, str]:
    shutil.copytree(Path(store["BENTOML_HOME"]) / "models", dest / "models")
    return {**store, "BENTOML_HOME": str(dest)}


def classify(c: httpx.Client) -> httpx.Response:
    return c.post("/v1/malaria/classify", content=PNG, headers={"content-type": "image/png"})


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    pytest.fail("condition not met in time")


def test_no_model_yet_is_503_with_retry_after_then_the_first_entry_is_served(store, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**store, "BENTOML_HOME": str(home)}
    proc, url, _log = start_server("malaria", POLL, env=env, wait_for="/livez")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = classify(c)
            assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.text
            assert (
                r.json()["error"].startswith("no model yet") and "python -m training.demo malaria" in r.json()["error"]
            )
            assert c.get("/readyz").status_code == 503
            status = c.get("/v1/malaria/models").json()
            assert status["state"] == "waiting" and status["serving"] is None and status["versions"] == []
            shutil.copytree(
                Path(store["BENTOML_HOME"]) / "models", home / "models", dirs_exist_ok=True
            )  # an entry lands
            wait_for(lambda: c.get("/readyz").status_code == 200)
            r = classify(c)
            assert r.status_code == 200 and r.json()["model"].startswith("malaria:")
            status = c.get("/v1/malaria/models").json()
            assert status["state"] == "ready" and status["serving"] == r.json()["model"]
            assert [v["serving"] for v in status["versions"]] == [True]
    finally:
        stop_server(proc)


def test_a_newer_entry_is_swapped_in_while_requests_run_and_none_fails(store, tmp_path):
    env = own_store(store, tmp_path / "home")
    proc, url, _log = start_server("malaria", POLL, env=env)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = classify(c)
                answers.append((r.status_code, r.json().get("model", r.text)))

    threads = [threading.Thread(target=send) for _ in range(4)]
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            old = classify(c).json()["model"]
            for t in threads:
                t.start()
            wait_for(lambda: len(answers) > 20)
            new = clone(env, old)
            wait_for(lambda: answers and answers[-1][1] == new)
            mark = len(answers)
            wait_for(lambda: len(answers) > mark + 20)
            stop.set()
            for t in threads:
                t.join(60)
            assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:5]
            models = [m for _, m in answers]
            switch = models.index(new)
            assert set(models[:switch]) == {old} and set(models[mark:]) == {new}  # one switch, and for good
            status = c.get("/v1/malaria/models").json()
            assert status["serving"] == new and [v["tag"] for v in status["versions"]] == [new, old]
            metrics = c.get("/metrics").text
            assert f'suite_model_info{{service="malaria",version="{new}"}} 1.0' in metrics
            assert f'suite_model_info{{service="malaria",version="{old}"}} 0.0' in metrics
            calls = [ln for ln in metrics.splitlines() if ln.startswith("model_call_seconds_count")]
            assert any(f'version="{new}"' in ln for ln in calls) and any(f'version="{old}"' in ln for ln in calls)
    finally:
        stop.set()
        stop_server(proc)


def test_pinned_versions_stay_until_pinned_again_and_latest_is_followed_after(store, tmp_path):
    env = own_store(store, tmp_path / "home")
    older = "malaria:" + (Path(env["BENTOML_HOME"]) / "models" / "malaria" / "latest").read_text().strip()
    base = clone(env, older)  # the newest now
    proc, url, _log = start_server("malaria", {**POLL, "model_tag": older}, env=env)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            assert classify(c).json()["model"] == older  # pinned at start, although a newer entry exists
            newest = clone(env, older)
            time.sleep(2)  # several looks at the store
            assert classify(c).json()["model"] == older
            status = c.get("/v1/malaria/models").json()
            assert status["pinned"] == older and "pinned" in status["detail"]
            r = c.post("/v1/malaria/models", json={"tag": base})
            assert r.status_code == 200 and r.json()["serving"] == base and r.json()["pinned"] == base, r.text
            assert classify(c).json()["model"] == base
            r = c.post("/v1/malaria/models", json={"tag": "latest"})
            assert r.status_code == 200 and r.json()["pinned"] is None
            assert classify(c).json()["model"] == newest
            r = c.post("/v1/malaria/models", json={"tag": "malaria:nosuchversion"})
            assert r.status_code == 404 and "no model" in r.json()["error"]
            r = c.post("/v1/malaria/models", json={"tag": base[: len("malaria:") + 4]})  # a prefix names no version
            assert r.status_code == 404 and "did you mean" in r.json()["error"], r.text
            for bad in ("malaria:", "../x", "malaria:a/b", "malaria:a:b"):
                r = c.post("/v1/malaria/models", json={"tag": bad})
                assert r.status_code == 422 and "tag" in r.json()["error"], (bad, r.text)
            assert c.post("/v1/malaria/models", content=b"x" * 10_000).status_code == 413
            assert c.post("/v1/malaria/models", json={"tig": "latest"}).status_code == 422
            assert classify(c).json()["model"] == newest  # none of that changed what serves
    finally:
        stop_server(proc)


def test_a_corrupt_new_entry_leaves_the_old_one_serving_and_says_why(store, tmp_path):
    env = own_store(store, tmp_path / "home")
    proc, url, log = start_server("malaria", POLL, env=env)
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            old = classify(c).json()["model"]
            bad = clone(env, old, corrupt="model.onnx")
            status = wait_for(lambda: (s := c.get("/v1/malaria/models").json())["last_error"] and s)
            assert status["serving"] == old and status["state"] == "ready"
            assert status["last_error"]["tag"] == bad and "model.onnx is corrupt" in status["last_error"]["reason"]
            r = classify(c)
            assert r.status_code == 200 and r.json()["model"] == old
            r = c.post("/v1/malaria/models", json={"tag": bad})  # by hand: refused the same way, old still serving
            assert r.status_code == 422 and "corrupt" in r.json()["error"]
            assert classify(c).json()["model"] == old
            metrics = c.get("/metrics").text
            assert f'suite_model_loads_total{{outcome="failed",service="malaria",version="{bad}"}}' in metrics
        lines = [ln for ln in log.read_text().splitlines() if f"model {bad} not loaded" in ln]
        assert lines and f"{old} keeps serving" in lines[0] and "model.onnx is corrupt" in lines[0]
    finally:
        stop_server(proc)


def test_palette_answers_by_clustering_before_its_generator_lands(palette_store, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**palette_store, "BENTOML_HOME": str(home)}
    proc, url, _log = start_server("palette", POLL, env=env)  # ready with an empty store
    image = png_bytes(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    post = {"content": image, "headers": {"content-type": "image/png"}}
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            r = c.post("/v1/palette/extract?n_colors=3", **post)
            assert r.status_code == 200 and r.json()["model"] == "none" and r.json()["method"] == "kmedians"
            r = c.post("/v1/palette/extract?method=generator", **post)
            assert r.status_code == 503 and r.headers["retry-after"] and "needs its model" in r.json()["error"]
            status = c.get("/v1/palette/models").json()
            assert status["state"] == "ready" and status["serving"] == "none" and "k-medians" in status["detail"]
            shutil.copytree(Path(palette_store["BENTOML_HOME"]) / "models", home / "models", dirs_exist_ok=True)
            wait_for(lambda: c.get("/v1/palette/models").json()["serving"] != "none")
            r = c.post("/v1/palette/extract?method=generator", **post)
            assert r.status_code == 200 and r.json()["model"].startswith("palette:"), r.text
    finally:
        stop_server(proc)


def test_the_gateway_forwards_the_management_route(suite):
    url, _, _ = suite
    with httpx.Client(base_url=url, timeout=30) as c:
        status = c.get("/v1/keyphrase/models")
        assert status.status_code == 200 and status.json()["state"] == "ready", status.text
        assert status.json()["serving"].startswith("keyphrase:")
        paths = c.get("/docs.json").json()["paths"]
        assert {"get", "post"} <= set(paths["/v1/keyphrase/models"])
