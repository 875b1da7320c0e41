"""Shared fixtures. The ``served`` fixture runs the real chain: tiny train -> ONNX export -> ``bentoml serve``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.server import ROOT, start_server, stop_server


def png_bytes(arr: np.ndarray, mode: str | None = None, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.fixture(scope="session")
def cells():
    """Held-out synthetic cells (seed unrelated to any training seed) and their labels."""
    from training.datasets.cells import generate

    return generate(12, seed=424242)


# Every private store the tests use: its name and the `python -m` steps that build it (tiny trainings, exports).
CLASSIFIER = "--synthetic 64 --test-size 8 --epochs 1 --batch-size 16 --input-size 64 --threads 2"
STORES: dict[str, list[str]] = {
    # malaria: the tiny model most service tests use.
    "malaria": [f"training malaria {CLASSIFIER}", "exporters malaria --format onnx -n 8"],
    # tumour: ~300 optimiser steps, enough for the model to find lesions, so its boxes can be compared.
    "tumor": [
        "training tumor --synthetic 300 --test-size 20 --epochs 8 --input-size 160 --batch-size 8 --patience 50",
        "exporters tumor --format onnx -n 6",
    ],
    # speech: the packaged Whisper base after one fine-tuning step, exported to CTranslate2 (whose parity check then
    # serves 30-second windows: one step does not teach short contexts).
    "asr": [
        "training asr --synthetic 6 --real-text 2 --test-size 2 --epochs 1 --batch-size 2 --limit-batches 1",
        "exporters asr --format ct2 -n 3",
    ],
    # keyphrases: the packaged MiniLM briefly (the smaller base keeps the shared service tests fast; the default e5
    # base is served in test_keyphrase_e5.py).
    "keyphrase": [
        "training keyphrase --synthetic 60 --test-size 6 --epochs 1 --batch-size 8 --lr 1e-4 --base packaged",
        "exporters keyphrase --format onnx -n 4",
    ],
    # keyphrases on e5:docs, the smallest trim (the default, e5, also keeps every ASCII and Hangul piece: 2.5x the file)
    "keyphrase-e5": [
        "training keyphrase --base e5:docs --synthetic 24 --test-size 2 --epochs 1 --limit-batches 2 --batch-size 2 "
        "--threads 2",
        "exporters keyphrase --format onnx -n 2",
    ],
    # palettes: both phases briefly, evaluated and exported.
    "palette": [
        "training palette --synthetic 120 --test-size 10 --epochs 2 --finetune-epochs 1 --batch-size 32",
        "exporters palette --format onnx -n 4",
    ],
}


def _classifiers() -> list[str]:
    from tasks import TASKS

    return [name for name, spec in TASKS.items() if spec.kind == "image-classification"]


for _name in _classifiers():  # every other image classifier: a tiny model (its task is configuration only)
    STORES.setdefault(_name, [f"training {_name} {CLASSIFIER}", f"exporters {_name} --format onnx -n 8"])

# The stores each fixture needs: what the background builder below makes ready before the tests ask.
FIXTURE_STORES: dict[str, list[str]] = {
    "store": ["malaria"],
    "tumor_store": ["tumor"],
    "asr_store": ["asr"],
    "keyphrase_store": ["keyphrase"],
    "e5_store": ["keyphrase-e5"],
    "palette_store": ["palette"],
    "classifier_stores": _classifiers(),
    "suite_store": [*_classifiers(), "tumor", "asr", "keyphrase", "palette"],
}
_homes: dict[str, Path] = {}
_prebuilt: dict[str, Future] = {}
_running: set[subprocess.Popen] = set()
_stopping = threading.Event()


def build_store(tmp_path_factory, name: str, steps: list[str], home: Path | None = None) -> dict[str, str]:
    """A private BentoML store built by running ``python -m <step>`` for each step; returns its environment."""
    home = home or tmp_path_factory.mktemp(f"bentoml-home-{name}")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}
    for step in steps:
        assert not _stopping.is_set(), "the test run ended before this store was built"
        cmd = [sys.executable, "-m", *step.split()]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _running.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            _running.discard(proc)
        assert proc.returncode == 0, f"{step}: {err[-3000:]}"
        assert "passed parity" in out or not step.startswith("exporters"), out[-3000:]
    return env


def named_store(tmp_path_factory, name: str) -> dict[str, str]:
    """The store ``STORES[name]`` describes: built in the background if it has started there, else here and now."""
    future = _prebuilt.get(name)
    if future is None or future.cancel():
        return build_store(tmp_path_factory, name, STORES[name], _homes.get(name))
    return future.result()


@pytest.fixture(scope="session", autouse=True)
def _build_stores_ahead(request, tmp_path_factory):
    """Builds the stores the selected tests need, one at a time in a background thread, in the order the tests
    first ask for them: the builds overlap the tests that wait on servers and sockets instead of stopping the run
    (``pytest_collection_modifyitems`` below runs the modules that need no store first)."""
    first: dict[str, int] = {}
    for i, item in enumerate(request.session.items):
        for fixture in getattr(item, "fixturenames", ()):
            for name in FIXTURE_STORES.get(fixture, ()):
                first.setdefault(name, i)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-build")
    for name in sorted(first, key=first.__getitem__):
        _homes[name] = tmp_path_factory.mktemp(f"bentoml-home-{name}")
        _prebuilt[name] = pool.submit(build_store, tmp_path_factory, name, STORES[name], _homes[name])
    yield
    _stopping.set()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list(_running):  # a build no test came to ask for (the run stopped early)
        proc.kill()


def pytest_collection_modifyitems(config, items) -> None:
    """Modules whose tests need no built store run first, then the others by how many stores they need (each
    module stays whole and in its order), so the background builds have the most time before they are needed."""

    def needs(item) -> set[str]:
        return {name for f in getattr(item, "fixturenames", ()) for name in FIXTURE_STORES.get(f, ())}

    def module(item) -> str:
        return item.nodeid.split("::")[0]

    per_module: dict[str, set[str]] = {}
    for item in items:
        per_module.setdefault(module(item), set()).update(needs(item))
    items.sort(key=lambda item: len(per_module[module(item)]))


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, str]:
    """A private BentoML store holding a tiny malaria model with its ONNX export, built by the CLIs."""
    return named_store(tmp_path_factory, "malaria")


@pytest.fixture(scope="session")
def server(store):
    """``bentoml serve services.image_classifier:Malaria`` on loopback with small limits: (base URL, log file)."""
    limits = {"max_body_mb": 2, "max_images": 8, "max_pixels": 4_000_000}
    proc, url, log = start_server("malaria", limits, env=store)
    yield url, log
    stop_server(proc)


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def tumor_store(tmp_path_factory) -> dict[str, str]:
    """A private store with a small YOLO tumour model (a few epochs on synthetic slices) and its ONNX export."""
    return named_store(tmp_path_factory, "tumor")


@pytest.fixture(scope="session")
def tumor_server(tumor_store):
    proc, url, log = start_server("tumor", {"max_body_mb": 8, "max_pixels": 1_000_000}, env=tumor_store)
    yield url, log
    stop_server(proc)


@pytest.fixture(scope="session")
def asr_store(tmp_path_factory) -> dict[str, str]:
    """A private store with the packaged Whisper base after one fine-tuning step, exported to CTranslate2."""
    return named_store(tmp_path_factory, "asr")


@pytest.fixture(scope="session")
def keyphrase_store(tmp_path_factory) -> dict[str, str]:
    """A private store with the packaged MiniLM fine-tuned briefly as a keyphrase tagger, exported to ONNX."""
    return named_store(tmp_path_factory, "keyphrase")


@pytest.fixture(scope="session")
def palette_store(tmp_path_factory) -> dict[str, str]:
    """A private store with a palette generator trained briefly (both phases), evaluated and exported to ONNX."""
    return named_store(tmp_path_factory, "palette")


@pytest.fixture(scope="session")
def classifier_stores(tmp_path_factory, store) -> dict[str, dict[str, str]]:
    """A store per image-classification task: malaria's above, a tiny model for every other (configuration only)."""
    return {name: store if name == "malaria" else named_store(tmp_path_factory, name) for name in _classifiers()}


@pytest.fixture(scope="session")
def suite_store(
    tmp_path_factory, classifier_stores, tumor_store, asr_store, keyphrase_store, palette_store
) -> dict[str, str]:
    """One store holding every task's model from the stores above (what the gateway and the bento serve)."""
    import shutil

    home = tmp_path_factory.mktemp("bentoml-home-suite")
    for env in (*classifier_stores.values(), tumor_store, asr_store, keyphrase_store, palette_store):
        shutil.copytree(Path(env["BENTOML_HOME"]) / "models", home / "models", dirs_exist_ok=True)
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="session")
def suite(suite_store):
    """The gateway over one store holding every task's model: (base URL, log file of every process, process)."""
    proc, url, log = start_server("gateway", {}, env=suite_store, timeout=300)
    yield url, log, proc
    stop_server(proc)


def entry_metadata(env: dict[str, str], tag: str) -> dict:
    """A store entry's metadata as `bentoml models get TAG -o json` shows it."""
    import json

    out = subprocess.run(
        [sys.executable, "-m", "bentoml", "models", "get", tag, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["metadata"]


def model_batch_counts(metrics: str, task: str) -> tuple[float, float]:
    """(model calls, calls with one item) of ``task``'s trained model versions, from a ``/metrics`` text."""
    import re

    version = rf'task="{task}",version="{task}:[^"]+"'
    count = sum(float(v) for v in re.findall(rf"^model_batch_size_count\{{{version}\}} (\S+)", metrics, re.M))
    ones = sum(float(v) for v in re.findall(rf'^model_batch_size_bucket\{{le="1.0",{version}\}} (\S+)', metrics, re.M))
    return count, ones
