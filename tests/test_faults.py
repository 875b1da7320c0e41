"""Faults: a model file corrupted on disk, a worker process killed under load, a client that stalls."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
import pytest

from benchmarks.server import start_server, stop_server
from services.bentoml_private import WORKER_MODULE
from tests.conftest import png_bytes


def _corrupt_copy(env: dict[str, str], dest: Path, name: str) -> dict[str, str]:
    """A copy of ``env``'s store whose malaria ``name`` has one byte flipped (same size, wrong checksum)."""
    shutil.copytree(Path(env["BENTOML_HOME"]) / "models", dest / "models")
    [path] = (dest / "models" / "malaria").glob(f"*/{name}")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return {**env, "BENTOML_HOME": str(dest)}


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_corrupt_model_file_leaves_service_up_not_ready_with_one_log_line(store, tmp_path, name):
    env = _corrupt_copy(store, tmp_path / "home", name)
    proc, url, log = start_server("malaria", {}, env=env, wait_for="/livez")
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            time.sleep(3)  # a crashing worker would have been restarted (and logged again) by now
            assert c.get("/readyz").status_code == 503
            png = png_bytes(np.zeros((32, 32, 3), np.uint8))
            r = c.post("/v1/malaria/classify", content=png, headers={"content-type": "image/png"})
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error.startswith("no model:") and f"{name} is corrupt" in error and r.headers["retry-after"]
            shown = c.get("/v1/malaria/models").json()
            assert shown["state"] == "failed" and f"{name} is corrupt" in shown["last_error"]["reason"]
            assert c.get("/livez").status_code == 200
        text = log.read_text()
        lines = [ln for ln in text.splitlines() if " not loaded: " in ln]
        assert len(lines) == 1, text[-3000:]  # not tried again at every look at the store
        assert f"{name} is corrupt (sha256" in lines[0] and "malaria" in lines[0]
        assert "Traceback" not in text, text[-3000:]
    finally:
        stop_server(proc)


def _worker_pids(proc) -> set[int]:
    """The service's worker processes (BentoML's arbiter spawns them as children of ``bentoml serve``)."""
    pids = set()
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if WORKER_MODULE in " ".join(p.cmdline()):
                pids.add(p.pid)
        except psutil.Error:  # exited (a zombie until reaped)
            pass
    return pids


def test_killed_worker_is_replaced_and_later_requests_succeed(store):
    proc, url, _ = start_server("malaria", {}, env=store)
    image = png_bytes(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/malaria/classify", content=image, headers={"content-type": "image/png"})
                    statuses.append(r.status_code)
                except httpx.HTTPError:
                    statuses.append(0)

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        [old] = _worker_pids(proc)
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert statuses and set(statuses) == {200}
        psutil.Process(old).kill()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            new = _worker_pids(proc) - {old}
            try:  # while the replacement imports and loads, a probe may wait in the socket's backlog
                if new and httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TimeoutException:
                continue
            time.sleep(0.5)
        else:
            pytest.fail("no ready worker within 120 s of the kill")
        served = len(statuses)
        time.sleep(2.0)  # under load again, with the replacement worker
        after = statuses[served:]
        assert len(after) >= 10 and set(after) == {200}, after
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        stop_server(proc)


def test_a_stalled_upload_gets_504_at_the_timeout_and_the_service_goes_on(store):
    """Every route has a time limit (``--arg timeout_s``): a client that stops sending mid-body is answered."""
    proc, url, _ = start_server("malaria", {"timeout_s": 2}, env=store)
    try:
        u = urlsplit(url)
        head = (
            f"POST /v1/malaria/classify HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: image/png\r\n"
            "Content-Length: 100000\r\n\r\n"
        )
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(head.encode() + b"\x89PNG\r\n\x1a\n")  # and then nothing
            start = time.monotonic()
            reply = s.recv(65536)
            waited = time.monotonic() - start
            head, _, body = reply.partition(b"\r\n\r\n")
            length = int(
                next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
            )
            while len(body) < length and (chunk := s.recv(65536)):  # the body may come in its own segment
                body += chunk
            reply = head + b"\r\n\r\n" + body
        assert reply.startswith(b"HTTP/1.1 504"), reply[:300]
        assert b"Not able to process the request in 2.0 seconds" in reply
        assert 1.5 < waited < 10
        png = png_bytes(np.zeros((32, 32, 3), np.uint8))
        r = httpx.post(url + "/v1/malaria/classify", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 200
    finally:
        stop_server(proc)
