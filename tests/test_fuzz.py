"""Schemathesis against the suite's OpenAPI document, through the gateway: every documented operation, generated
valid and invalid requests, zero 5xx and zero answers outside the documented statuses, content types and schemas.

``make test`` runs a short pass (FUZZ_EXAMPLES=25 per operation and phase); ``make fuzz`` a longer one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.http

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_or_schema_violation(suite, tmp_path):
    examples = os.environ.get("FUZZ_EXAMPLES", "25")
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{suite[0]}/docs.json",
        "--checks",
        CHECKS,
        "--max-examples",
        examples,
        "--seed",
        os.environ.get("FUZZ_SEED", "20261128"),
        "--request-timeout",
        "120",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        "--no-color",
    ]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=3600)  # its cache goes there
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    doc = httpx.get(f"{suite[0]}/docs.json").json()
    operations = sum(len(methods) for methods in doc["paths"].values())
    assert operations >= 6 and f"Tested: {operations}" in r.stdout, r.stdout[-3000:]  # every one, each task's too
    assert "failed" not in r.stdout.split("SUMMARY")[-1], r.stdout[-3000:]
