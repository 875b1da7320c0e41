"""A task of an existing kind from outside the registry: nothing but its spec and data generator
(``tests/extra_task.py``) is needed to train, export, serve it behind the gateway and list it on the web page;
``tests/test_k8s.py`` renders its manifests."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import httpx
import pytest

import tasks
from benchmarks.server import ROOT, start_server, stop_server
from tasks.kinds import IMAGE_CLASSIFICATION, KINDS, kind_of
from tasks.spec import DetectorSpec, ImageClassifierSpec
from tests.conftest import png_bytes
from tests.extra_task import DOTS, STRIPES, TEXTURE, generate

MODULES = {"SUITE_TASK_MODULES": "tests.extra_task"}


@pytest.fixture
def registry(monkeypatch) -> dict:
    """A copy of the registry for this test: what it registers is gone afterwards."""
    copy = dict(tasks.TASKS)
    monkeypatch.setattr(tasks, "TASKS", copy)
    return copy


def test_register_adds_a_task_of_an_existing_kind(registry):
    from services import target

    assert "texture" not in registry  # importing its module registered nothing
    assert tasks.register(TEXTURE) is TEXTURE and tasks.get_task("texture") is TEXTURE
    assert tasks.register(TEXTURE) is TEXTURE  # again: a no-op
    assert kind_of(TEXTURE) is IMAGE_CLASSIFICATION
    assert target("texture") == "services.image_classifier:Texture"


class VideoSpec(ImageClassifierSpec):
    @property
    def kind(self) -> str:
        return "video"


class MislabelledSpec(DetectorSpec):
    @property
    def kind(self) -> str:
        return "image-classification"


@pytest.mark.parametrize(
    "spec, words",
    [
        (dataclasses.replace(TEXTURE, name="Texture-2"), "lowercase letters and digits"),
        (dataclasses.replace(TEXTURE, labels=("a", "b", "c")), "already registered with a different spec"),
        (VideoSpec(**{f.name: getattr(TEXTURE, f.name) for f in dataclasses.fields(TEXTURE)}), "unknown kind 'video'"),
        (MislabelledSpec("odd", ("x",), "", "tests.extra_task:generate"), "is a ImageClassifierSpec"),
    ],
)
def test_register_refuses_what_no_stage_could_serve(registry, spec, words):
    tasks.register(TEXTURE)
    with pytest.raises((ValueError, KeyError, TypeError), match=words):
        tasks.register(spec)
    assert registry["texture"] is TEXTURE and "odd" not in registry


def test_the_synthetic_generator_has_its_kind_shape():
    images, labels = generate(6, seed=1)
    assert sorted(labels) == [STRIPES] * 3 + [DOTS] * 3
    assert all(im.shape == (64, 64, 3) and im.dtype.name == "uint8" for im in images)


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_task_modules_named_in_the_environment_register_in_every_process():
    env = {**os.environ, **MODULES}
    r = python("import tasks; print(sorted(tasks.TASKS))", env)
    assert r.returncode == 0 and "'texture'" in r.stdout, r.stderr[-2000:]
    r = python("import tasks", {**env, "SUITE_TASK_MODULES": "tests.extra_task, tests.no_such_module"})
    assert r.returncode != 0 and "SUITE_TASK_MODULES: cannot import 'tests.no_such_module'" in r.stderr
    r = python("import tasks", {**env, "SUITE_TASK_MODULES": "tests.conftest"})
    assert r.returncode != 0 and "defines no TASKS" in r.stderr


def test_every_kind_is_complete():
    """Every name a kind declares resolves, and every registered task has a kind."""
    import importlib.util

    from tasks.spec import resolve

    for kind in KINDS.values():
        names = [kind.spec, kind.trainer, kind.store_writer, kind.sample.bodies, kind.benchmark_run]
        for name in [*names, *kind.exporters.values(), *([kind.panel] if kind.panel else [])]:
            assert callable(resolve(name)), name
        for module in (kind.service, kind.benchmark):
            assert importlib.util.find_spec(module) is not None, module
    for spec in tasks.TASKS.values():
        assert spec.export_format == kind_of(spec).default_format


@pytest.mark.http
def test_a_registered_task_is_trained_exported_served_and_listed(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true", **MODULES}
    steps = [
        "training texture --synthetic 48 --test-size 8 --epochs 1 --batch-size 16 --input-size 64 --threads 2",
        "exporters texture --format onnx -n 8",
    ]
    for step in steps:
        r = subprocess.run([sys.executable, "-m", *step.split()], cwd=ROOT, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
    assert "passed parity" in r.stdout
    proc, url, log = start_server("gateway", {"tasks": "texture"}, env=env, log_dir=tmp_path, timeout=240)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            images, _ = generate(2, seed=99)
            for image in images:
                r = client.post("/v1/texture/classify", files={"image": ("t.png", png_bytes(image), "image/png")})
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["label"] in TEXTURE.labels and set(body["probabilities"]) == set(TEXTURE.labels)
                assert body["model"].startswith("texture:")
            listed = client.get("/tasks.json").json()["tasks"]
            assert listed == [
                {
                    "name": "texture",
                    "kind": "image-classification",
                    "title": "Texture",
                    "heading": "Textures: stripes or dots",
                    "labels": ["stripes", "dots"],
                    "positive_label": "dots",
                }
            ]
            paths = client.get("/docs.json").json()["paths"]
            assert "/v1/texture/classify" in paths and "/v1/texture/classify/batch" in paths
    finally:
        stop_server(proc)
    assert "Traceback" not in log.read_text()
