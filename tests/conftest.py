"""Shared fixtures. The ``served`` fixture runs the real chain: tiny train -> ONNX export -> ``bentoml serve``."""

from __future__ import annotations

import io
import os
import subprocess
import sys

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


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> dict[str, str]:
    """A private BentoML store holding a tiny malaria model with its ONNX export, built by the CLIs."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    args = "malaria --synthetic 64 --test-size 8 --epochs 1 --batch-size 16 --input-size 64 --threads 2"
    train = [sys.executable, "-m", "training", *args.split()]
    subprocess.run(train, cwd=ROOT, env=env, check=True, capture_output=True)
    export = [sys.executable, "-m", "exporters", "malaria", "--format", "onnx", "-n", "8"]
    subprocess.run(export, cwd=ROOT, env=env, check=True, capture_output=True)
    return env


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
    home = tmp_path_factory.mktemp("bentoml-home-tumor")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    # ~300 optimiser steps: enough for the model to find lesions, so its boxes can be compared.
    args = "tumor --synthetic 300 --test-size 20 --epochs 8 --input-size 160 --batch-size 8 --patience 50"
    train = [sys.executable, "-m", "training", *args.split()]  # ~300 steps: enough to find lesions
    r = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(
        [sys.executable, "-m", "exporters", "tumor", "--format", "onnx", "-n", "6"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return env


@pytest.fixture(scope="session")
def tumor_server(tumor_store):
    proc, url, log = start_server("tumor", {"max_body_mb": 8, "max_pixels": 1_000_000}, env=tumor_store)
    yield url, log
    stop_server(proc)


def build_store(tmp_path_factory, name: str, steps: list[str]) -> dict[str, str]:
    """A private BentoML store built by running ``python -m <step>`` for each step; returns its environment."""
    home = tmp_path_factory.mktemp(f"bentoml-home-{name}")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", "HF_HUB_OFFLINE": "1"}
    for step in steps:
        r = subprocess.run([sys.executable, "-m", *step.split()], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "passed parity" in r.stdout or not step.startswith("exporters")
    return env


@pytest.fixture(scope="session")
def asr_store(tmp_path_factory) -> dict[str, str]:
    """A private store with the packaged Whisper base after one fine-tuning step, exported to CTranslate2 (whose
    parity check then serves 30-second windows: one step does not teach short contexts)."""
    steps = [
        "training asr --synthetic 6 --real-text 2 --test-size 2 --epochs 1 --batch-size 2 --limit-batches 1",
        "exporters asr --format ct2 -n 3",
    ]
    return build_store(tmp_path_factory, "asr", steps)


@pytest.fixture(scope="session")
def keyphrase_store(tmp_path_factory) -> dict[str, str]:
    """A private store with the packaged MiniLM fine-tuned briefly as a keyphrase tagger, exported to ONNX (the
    smaller base keeps the shared service tests fast; the default e5 base is served in test_keyphrase_e5.py)."""
    steps = [
        "training keyphrase --synthetic 60 --test-size 6 --epochs 1 --batch-size 8 --lr 1e-4 --base packaged",
        "exporters keyphrase --format onnx -n 4",
    ]
    return build_store(tmp_path_factory, "keyphrase", steps)


@pytest.fixture(scope="session")
def palette_store(tmp_path_factory) -> dict[str, str]:
    """A private store with a palette generator trained briefly (both phases), evaluated and exported to ONNX."""
    steps = [
        "training palette --synthetic 120 --test-size 10 --epochs 2 --finetune-epochs 1 --batch-size 32",
        "exporters palette --format onnx -n 4",
    ]
    return build_store(tmp_path_factory, "palette", steps)


@pytest.fixture(scope="session")
def classifier_stores(tmp_path_factory, store) -> dict[str, dict[str, str]]:
    """A store per image-classification task: malaria's above, a tiny model for every other (configuration only)."""
    from tasks import TASKS

    out = {"malaria": store}
    for name, spec in TASKS.items():
        if spec.kind == "image-classification" and name not in out:
            train = (
                f"training {name} --synthetic 64 --test-size 8 --epochs 1 --batch-size 16 --input-size 64 --threads 2"
            )
            out[name] = build_store(tmp_path_factory, name, [train, f"exporters {name} --format onnx -n 8"])
    return out


@pytest.fixture(scope="session")
def suite_store(
    tmp_path_factory, classifier_stores, tumor_store, asr_store, keyphrase_store, palette_store
) -> dict[str, str]:
    """One store holding every task's model from the stores above (what the gateway and the bento serve)."""
    import shutil
    from pathlib import Path

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
