"""ONNX export: self-describing file, parity with PyTorch, loud failure when parity breaks; TensorRT absent."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from exporters.onnx import export_onnx, validate_onnx
from exporters.validate import ParityError, check_parity, model_inputs, validation_images
from tasks import get_task
from tasks.classifier import build_model, head
from tests.conftest import ROOT, entry_metadata

SPEC = get_task("malaria")
META = {"input_size": 64, "normalization": {"mean": list(SPEC.mean), "std": list(SPEC.std)}}


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in head(model).modules() if isinstance(m, torch.nn.Linear)][-1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(SPEC.backbone, SPEC.num_classes)
    # Make the head matter so that probabilities are not all ~0.5 (a parity check on a flat model proves little).
    torch.nn.init.normal_(last_linear(m).weight, std=0.5)
    return m.eval()


def test_onnx_parity_on_real_images_and_metadata(model, tmp_path):
    path = tmp_path / "model.onnx"
    export_onnx(model, SPEC, META, "malaria:test", path)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["task"] == "malaria" and json.loads(props["labels"]) == list(SPEC.labels)
    assert props["input_size"] == "64" and props["model_tag"] == "malaria:test"
    x = model_inputs(SPEC, META, validation_images(SPEC, None, 12, seed=5))
    report = validate_onnx(model, path, x, SPEC.export_atol)
    assert report["max_abs_diff"] <= SPEC.export_atol and report["label_disagreements"] == 0
    with torch.inference_mode():
        p = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    assert p.max(1).min() < 0.99 or p.std() > 0.01  # the comparison was on informative outputs


def test_parity_check_fails_loudly_on_a_different_model(model, tmp_path):
    path = tmp_path / "model.onnx"
    export_onnx(model, SPEC, META, "malaria:test", path)
    tampered = build_model(SPEC.backbone, SPEC.num_classes).eval()
    tampered.load_state_dict(model.state_dict())
    with torch.no_grad():
        last_linear(tampered).bias += torch.tensor([0.3, -0.3])
    x = model_inputs(SPEC, META, validation_images(SPEC, None, 4, seed=5))
    with pytest.raises(ParityError, match="disagrees with PyTorch"):
        validate_onnx(tampered, path, x, SPEC.export_atol)


def test_check_parity_compares_each_batch_size():
    ref = lambda x: np.tile([[0.7, 0.3]], (len(x), 1))  # noqa: E731
    seen = []

    def cand(x):
        seen.append(len(x))
        return ref(x)

    report = check_parity(ref, cand, np.zeros((8, 3, 4, 4), np.float32), 1e-6, batch_sizes=(1, 5))
    assert seen == [1] * 8 + [5, 3] and report["max_abs_diff"] == 0.0


def test_tensorrt_export_explains_what_is_missing(store):
    pytest.importorskip("bentoml")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the GPU test covers the real build")
    except ImportError:
        pass
    run = subprocess.run(
        [sys.executable, "-m", "exporters", "malaria", "--format", "tensorrt"],
        cwd=ROOT,
        env=store,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 3
    assert "TensorRT is not installed" in run.stderr


def test_store_entry_describes_itself(store):
    """The CLI-built entry records how it was made, how good it is, and checksums of its files."""
    meta = entry_metadata(store, "malaria:latest")
    for key in ("config", "metrics", "dataset", "labels", "input_size", "normalization", "git_commit", "created"):
        assert key in meta, key
    assert meta["labels"] == list(SPEC.labels) and meta["input_size"] == 64
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"} <= set(meta["metrics"]["test"])
    assert meta["export_onnx"]["max_abs_diff"] <= SPEC.export_atol
    assert set(meta["files"]) == {"model.pt", "model.onnx"}
