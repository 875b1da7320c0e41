"""The gateway in front of a task that runs as a separate deployment (``task_urls``), as on Kubernetes."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.server import start_server, stop_server
from tests.conftest import png_bytes

pytestmark = pytest.mark.http


def test_gateway_forwards_to_a_separately_deployed_task_and_tracks_its_readiness(palette_store, tmp_path):
    task, task_url, _ = start_server("palette", {}, env=palette_store, log_dir=tmp_path)
    home = tmp_path / "gateway-home"  # its own home: `bentoml serve` empties its home's metrics folder
    home.mkdir()
    (home / "models").symlink_to(Path(palette_store["BENTOML_HOME"]) / "models")
    env = {**palette_store, "BENTOML_HOME": str(home)}
    args = {"tasks": "palette", "task_urls": f"palette={task_url}"}
    gateway, url, _ = start_server("gateway", args, env=env, log_dir=tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            image = png_bytes(np.full((40, 40, 3), (200, 30, 30), np.uint8))
            through = client.post("/v1/palette/extract", content=image, headers={"content-type": "image/png"})
            direct = httpx.post(task_url + "/v1/palette/extract", content=image, headers={"content-type": "image/png"})
            assert through.status_code == 200 and through.json()["colors"] == direct.json()["colors"]
            # an upload over the task's limit: the task's 413 comes back, not a gateway error
            big = b"\x00" * (21 * 1024 * 1024)  # palette's default limit is 20 MB
            r = client.post("/v1/palette/extract", content=big, headers={"content-type": "image/png"})
            assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
            stop_server(task)  # the task goes away: the gateway stops being ready and says why requests fail
            assert client.get("/readyz").status_code == 503
            r = client.post("/v1/palette/extract", content=image, headers={"content-type": "image/png"})
            assert r.status_code == 503 and "not available" in r.json()["error"]
    finally:
        stop_server(gateway)
        stop_server(task)
