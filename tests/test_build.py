"""`bentoml build` packages the gateway, every task service and the models they declare, offline
(lock_packages: false)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.server import ROOT
from tasks import TASKS


def test_bentoml_build_packages_every_service_and_model(suite_store):
    cli = [sys.executable, "-m", "bentoml"]
    r = subprocess.run([*cli, "build", "--output", "tag"], cwd=ROOT, env=suite_store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    tag = r.stdout.strip().splitlines()[-1].split()[-1].removeprefix("__tag__:")
    info = json.loads(
        subprocess.run(
            [*cli, "get", tag, "-o", "json"], env=suite_store, capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["service"] == "services.gateway:Gateway"
    services = {s["name"]: s for s in info["services"]}
    assert set(services) == {"gateway", *TASKS}
    for task in TASKS:
        assert [m["tag"].split(":")[0] for m in services[task]["models"]] == [task]
