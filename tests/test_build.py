"""`bentoml build` packages the service with the model it declares, offline (lock_packages: false)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.server import ROOT


def test_bentoml_build_packages_the_malaria_model(store):
    cli = [sys.executable, "-m", "bentoml"]
    r = subprocess.run([*cli, "build", "--output", "tag"], cwd=ROOT, env=store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    tag = r.stdout.strip().splitlines()[-1].split()[-1].removeprefix("__tag__:")
    info = json.loads(
        subprocess.run([*cli, "get", tag, "-o", "json"], env=store, capture_output=True, text=True, check=True).stdout
    )
    assert info["service"] == "services.malaria:Malaria"
    (service,) = info["services"]
    assert [m["tag"].split(":")[0] for m in service["models"]] == ["malaria"]
