"""The command lines: training from a class-per-folder tree, and clear errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.server import ROOT
from tasks import TASKS
from tests.conftest import entry_metadata


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}


def test_train_from_folder_tree_writes_a_store_entry(tmp_path, env):
    data = tmp_path / "cell_images"
    assert run("training.datasets", "malaria", "--out", str(data), "-n", "24", env=env).returncode == 0
    r = run(
        "training",
        "malaria",
        "--data",
        str(tmp_path),
        "--epochs",
        "1",
        "--input-size",
        "48",
        "--batch-size",
        "8",
        "--freeze",
        "half",
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    tag = json.loads(r.stdout[r.stdout.index("{") :])["tag"]
    meta = entry_metadata(env, tag)
    assert meta["dataset"]["source"].startswith("folder:") and meta["config"]["freeze"] == "half"
    assert meta["training"]["frozen_feature_blocks"] == 4 and meta["metrics"]["test"]["n"] == 6


@pytest.mark.parametrize(
    "args, words",
    [
        (["--synthetic", "10", "--data", "x"], "exactly one data source"),
        (["--synthetic", "10", "--freeze", "most"], "freeze"),
        (["--synthetic", "10", "--epochs", "three"], "epochs"),
        (["--synthetic", "10", "--pretrained", "/nonexistent.pth"], "not found"),
        (["--data", "/nonexistent-dir"], "data folder not found"),
        (["--data", "/tmp"], "does not hold one folder per class"),
    ],
)
def test_training_cli_errors_are_clear(env, args, words):
    r = run("training", "malaria", *args, env=env)
    assert r.returncode == 2 and words in r.stderr, r.stderr[-1500:]


def test_export_without_a_model_says_how_to_make_one(env):
    r = run("exporters", "malaria", "--format", "onnx", env=env)
    assert r.returncode == 1 and "python -m training.demo malaria" in r.stderr


def test_serve_launcher_refuses_unknown_tasks(env):
    r = run("services", "nonsense", env=env)
    assert r.returncode == 2 and "unknown task" in r.stderr


def test_demo_builds_run_fastest_first_and_a_failure_is_recorded_without_stopping_the_rest(env, tmp_path):
    from training.demo import BUILD_MINUTES, build_order

    assert build_order(["asr", "malaria", "tumor", "palette"]) == ["palette", "tumor", "malaria", "asr"]
    assert build_order(["unmeasured", "thermal"]) == ["thermal", "unmeasured"]  # unknown build times go last
    assert set(BUILD_MINUTES) >= set(TASKS)
    status = tmp_path / "status.json"
    flags = ("--train-args", "malaria=--epochs three", "--train-args", "thermal=--freeze most")
    r = run("training.demo", "--status", str(status), *flags, "thermal", "malaria", env=env)
    assert r.returncode == 1 and "demo builds failed: thermal, malaria" in r.stderr, r.stderr[-1500:]
    doc = json.loads(status.read_text())
    assert list(doc["tasks"]) == ["thermal", "malaria"]  # both tried, in build order
    assert {s["state"] for s in doc["tasks"].values()} == {"failed"}
    assert all("training failed" in s["reason"] for s in doc["tasks"].values())
    r = run("training.demo", "--train-args", "nonsense=--epochs 1", env=env)
    assert r.returncode == 2 and "expected TASK=FLAGS with a known task" in r.stderr


def test_a_dead_builder_leaves_no_task_building_for_ever(tmp_path):
    from training.demo import Status, abandon

    path = tmp_path / "status.json"
    Status(path, ["thermal", "malaria"]).set("thermal", state="done")
    abandon(path, "the build process exited with -9")
    tasks = json.loads(path.read_text())["tasks"]
    assert tasks["thermal"] == {"state": "done"} and tasks["malaria"]["state"] == "failed"
    assert tasks["malaria"]["reason"] == "the build process exited with -9"
