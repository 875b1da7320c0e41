"""The one result schema every task's benchmark writes, and its Markdown rendering.

``{"task", "device", "commit", "date", "host", "rows": [{"path", "backend", "batch", "concurrency", "p50_ms",
"p95_ms", "p99_ms", "throughput_per_s", "errors", ...}]}``; ``path`` is ``floor`` (model alone, in process) or
``service`` (over HTTP) or ``noop`` (the no-op route: the same server and pipeline, no decoding, no model).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

import numpy as np

ROW_KEYS = ("path", "backend", "batch", "concurrency", "p50_ms", "p95_ms", "p99_ms", "throughput_per_s", "errors")


def row(
    path: str,
    backend: str,
    batch: int,
    concurrency: int,
    latencies_s: list[float],
    throughput: float,
    errors: int = 0,
    **extra: object,
) -> dict:
    ms = np.asarray(latencies_s) * 1000
    p50, p95, p99 = (float(np.percentile(ms, q)) for q in (50, 95, 99)) if len(ms) else (float("nan"),) * 3
    return {
        "path": path,
        "backend": backend,
        "batch": batch,
        "concurrency": concurrency,
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "throughput_per_s": round(throughput, 1),
        "errors": errors,
        "n": len(ms),
        **extra,
    }


def host_description(device: str) -> str:
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


def write(
    task: str,
    device: str,
    rows: list[dict],
    out_dir: Path,
    notes: list[str],
    name: str | None = None,
    command: str | None = None,
) -> Path:
    from training.store import git_commit

    doc = {
        "task": task,
        "device": device,
        "commit": git_commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": host_description(device),
        "rows": rows,
        "notes": notes,
        "command": command or f"python -m benchmarks {task} --device {device}",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name or f"{task}-{device}"
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(doc))
    return path


def markdown(doc: dict) -> str:
    command = doc.get("command") or f"python -m benchmarks {doc['task']} --device {doc['device']}"
    extras = sorted({k for r in doc["rows"] for k in r} - set(ROW_KEYS) - {"n"})
    cols = [*ROW_KEYS[:4], *extras, *ROW_KEYS[4:]]
    lines = [
        f"# {doc['task']} on {doc['device']}",
        "",
        f"Host: {doc['host']}. Commit `{doc['commit'][:12]}{'+dirty' if doc['commit'].endswith('+dirty') else ''}`, "
        f"{doc['date']}.",
        f"Command: `{command}`.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in doc["rows"]:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    if doc.get("notes"):
        lines += ["", *(f"- {n}" for n in doc["notes"])]
    return "\n".join(lines) + "\n"
