"""Shared fixtures. The ``served`` fixture runs the real chain: tiny train -> ONNX export -> ``bentoml serve``."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    train = [
        sys.executable,
        "-m",
        "training",
        "malaria",
        "--synthetic",
        "64",
        "--test-size",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--input-size",
        "64",
        "--threads",
        "2",
    ]
    subprocess.run(train, cwd=ROOT, env=env, check=True, capture_output=True)
    export = [sys.executable, "-m", "exporters", "malaria", "--format", "onnx", "-n", "8"]
    subprocess.run(export, cwd=ROOT, env=env, check=True, capture_output=True)
    return env


def start_server(env: dict[str, str], *args: str, timeout: float = 180) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "services.malaria:Malaria",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for a in args:
        cmd += ["--arg", a]
    log = open(Path(env["BENTOML_HOME"]) / f"serve-{port}.log", "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}: {Path(log.name).read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, Path(log.name)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"server not ready in {timeout}s: {Path(log.name).read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def server(store):
    """``bentoml serve services.malaria:Malaria`` on loopback with small limits: (base URL, log file)."""
    proc, url, log = start_server(store, "max_body_mb=2", "max_images=8", "max_pixels=4000000")
    yield url, log
    stop_server(proc)


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c
