"""The benchmark harness end to end on the tiny test models: every row of the shared schema, no errors. The image
classifier's run is in `make test`; each other kind's (its peers, floors and service rows) is in `make test-slow`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.report import ROW_KEYS
from benchmarks.server import ROOT

pytestmark = pytest.mark.http


def test_benchmark_writes_the_shared_schema(store, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "malaria",
        "--requests",
        "12",
        "--concurrency",
        "1,4",
        "--seconds",
        "0.2",
        "--min-iters",
        "3",
        "--floor-batch",
        "4",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "malaria-cpu.json").read_text())
    assert {"task", "device", "commit", "date", "rows"} <= set(doc) and doc["task"] == "malaria"
    rows = doc["rows"]
    assert all(set(ROW_KEYS) <= set(row) for row in rows)
    floors = [r for r in rows if r["path"] == "floor"]
    services = [r for r in rows if r["path"] == "service"]
    assert {r["concurrency"] for r in rows if r["path"] == "noop"} == {1, 4}  # the framework's share, apart
    assert {(r["backend"], r["batch"], r["input"]) for r in floors} == {
        (b, n, i) for b in ("onnxruntime/cpu", "pytorch/cpu") for n in (1, 4) for i in ("bytes", "tensor")
    }
    assert {(r["concurrency"], r["batching"]) for r in services} == {(c, b) for c in (1, 4) for b in (True, False)}
    assert all(r["errors"] == 0 and r["n"] >= 12 and 0 < r["p50_ms"] <= r["p99_ms"] for r in services)
    assert all(r["backend"] == "onnxruntime/cpu" for r in services)
    assert "| service |" in (tmp_path / "malaria-cpu.md").read_text()


@pytest.mark.slow  # each kind's benchmark end to end: a minute or so each; `make test-slow`
def test_tumor_benchmark_compares_onnx_pytorch_and_ultralytics(tumor_store, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "tumor",
        "--requests",
        "8",
        "--concurrency",
        "1,2",
        "--seconds",
        "0.2",
        "--min-iters",
        "3",
        "--floor-batch",
        "4",
        "--out",
        str(tmp_path),
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=tumor_store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "tumor-cpu.json").read_text())
    backends = {row["backend"] for row in doc["rows"] if row["path"] == "floor"}
    assert backends == {"onnxruntime/cpu", "pytorch/cpu", "ultralytics/cpu"}
    services = [row for row in doc["rows"] if row["path"] == "service"]
    assert len(services) == 4 and all(row["errors"] == 0 for row in services)
    assert any("ultralytics predict" in note for note in doc["notes"])


@pytest.mark.slow  # each kind's benchmark end to end: a minute or so each; `make test-slow`
def test_speech_benchmark_compares_openai_whisper_ctranslate2_and_the_service(asr_store, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "asr", "--clips", "3", "--requests", "4", "--out", str(tmp_path)]
    cmd += ["--concurrency", "1,2"]
    r = subprocess.run(cmd, cwd=ROOT, env=asr_store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "asr-cpu.json").read_text())
    floors = {row["backend"]: row for row in doc["rows"] if row["path"] == "floor"}
    assert {"openai-whisper/cpu", "ctranslate2/cpu-float32", "ctranslate2/cpu-float32-30s"} <= set(floors)
    assert "stock whisper-base ctranslate2/cpu-float32-30s" in floors  # the model it was tuned from, a peer
    assert all(row["cer"] >= 0 and row["n"] == 3 and row["rtf"] > 0 for row in floors.values())
    services = [row for row in doc["rows"] if row["path"] == "service"]
    assert [row["concurrency"] for row in services] == [1, 2] and all(row["errors"] == 0 for row in services)
    assert any("openai-whisper transcribe" in note for note in doc["notes"])
    assert any("real Korean sentences" in note for note in doc["notes"])
    assert any("real-text held-out CER" in note for note in doc["notes"])  # the entry's three scores


@pytest.mark.slow  # each kind's benchmark end to end: a minute or so each; `make test-slow`
def test_keyphrase_benchmark_compares_onnx_and_pytorch(keyphrase_store, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "keyphrase", "--requests", "8", "--concurrency", "1,2"]
    cmd += ["--seconds", "0.2", "--min-iters", "3", "--floor-batch", "4"]
    cmd += ["--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, env=keyphrase_store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "keyphrase-cpu.json").read_text())
    floors = {(row["backend"], row["batch"], row["input"]) for row in doc["rows"] if row["path"] == "floor"}
    assert floors == {(b, n, i) for b in ("onnxruntime/cpu", "pytorch/cpu") for n in (1, 4) for i in ("text", "tokens")}
    services = [row for row in doc["rows"] if row["path"] == "service"]
    assert len(services) == 4 and all(row["errors"] == 0 and row["backend"] == "onnxruntime/cpu" for row in services)
    assert any("ONNX Runtime vs PyTorch eager" in note for note in doc["notes"])


@pytest.mark.slow  # each kind's benchmark end to end: a minute or so each; `make test-slow`
def test_palette_benchmark_measures_quality_and_speed_beside_the_peers(palette_store, tmp_path):
    cmd = [sys.executable, "-m", "benchmarks", "palette", "--requests", "8", "--concurrency", "1,2"]
    cmd += ["--seconds", "0.2", "--min-iters", "3", "--quality-images", "20", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, env=palette_store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "palette-cpu.json").read_text())
    floors = {row["backend"].split("/")[0]: row for row in doc["rows"] if row["path"] == "floor"}
    assert set(floors) == {"kmeans", "kmedians", "generator", "colorthief", "pylette"}
    assert all(row["input"] == "jpeg 1024x768" and row["mean_delta_e"] > 0 for row in floors.values())
    assert floors["kmedians"]["mean_delta_e"] < floors["colorthief"]["mean_delta_e"]
    services = [row for row in doc["rows"] if row["path"] == "service"]
    assert len(services) == 4 and all(row["errors"] == 0 for row in services)
    assert any("better peer" in note for note in doc["notes"])
