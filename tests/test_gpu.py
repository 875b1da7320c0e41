"""GPU checks, run on a CUDA host with `make test-gpu` (deselected from `make test`, which has no GPU)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchmarks.server import ROOT, start_server, stop_server
from tests.conftest import png_bytes

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def need_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.fail("`make test-gpu` needs a CUDA GPU: torch sees none on this host")


def test_service_on_cuda_agrees_with_cpu(store, cells):
    import httpx

    data = png_bytes(cells[0][0])
    answers = {}
    for device in ("cpu", "cuda"):
        proc, url, _ = start_server("malaria", {"device": device}, env=store)
        try:
            r = httpx.post(url + "/v1/malaria/classify?gradcam=true", files={"image": ("c.png", data, "image/png")})
            assert r.status_code == 200, r.text
            answers[device] = r.json()
        finally:
            stop_server(proc)
    assert answers["cuda"]["backend"].endswith("/cuda")
    p_cpu = np.array(list(answers["cpu"]["probabilities"].values()))
    p_gpu = np.array(list(answers["cuda"]["probabilities"].values()))
    assert np.abs(p_cpu - p_gpu).max() < 2e-2  # fp16 on the GPU
    assert answers["cuda"]["gradcam"] is not None


def test_tensorrt_export_passes_parity(store):
    pytest.importorskip("tensorrt")
    r = subprocess.run(
        [sys.executable, "-m", "exporters", "malaria", "--format", "tensorrt"],
        cwd=ROOT,
        env=store,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "passed parity" in r.stdout


def test_cuda_benchmark_runs(store, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "malaria",
        "--device",
        "cuda",
        "--requests",
        "50",
        "--concurrency",
        "1,8",
        "--seconds",
        "0.5",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "malaria-cuda.json").is_file()
