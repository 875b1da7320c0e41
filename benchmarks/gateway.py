"""``python -m benchmarks.gateway [--tasks malaria,palette] [--requests N] [--concurrency 1,8]``

What the gateway costs: each task's service called directly (``bentoml serve services.<task>:<Task>``) and
through the gateway (``bentoml serve services.gateway:Gateway``, the task in its own processes behind it), the same
requests, both servers up at once and measured in alternating rounds so that drift hits both alike. Writes
``benchmarks/results/gateway-cpu.{json,md}`` in the shared schema (``via`` says which path a row took).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import served_backend
from benchmarks.load import multipart_request, raw_request, run_load
from benchmarks.report import row, write
from benchmarks.server import start_server, stop_server
from tasks import TASKS, get_task
from tasks.kinds import kind_of

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = 4


def payloads(task: str) -> tuple[str, list[bytes], str | None, str]:
    """(route, bodies, multipart field or None for raw bodies, content type) as a client sends them: the task's
    kind's sample (``tasks.kinds``)."""
    spec = get_task(task)
    sample = kind_of(spec).sample
    return sample.route, sample.make(spec, sample.gateway_n), sample.field, sample.content_type


def requests_for(url: str, task: str, route: str, bodies: list[bytes], field: str | None, ctype: str) -> list[bytes]:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    path = f"/v1/{task}/{route}"
    if field:
        return [multipart_request(host, port, path, field, f"f{i}", b, ctype) for i, b in enumerate(bodies)]
    return [raw_request(host, port, path, b, ctype) for b in bodies]


def compare(task: str, url: str, gw_url: str, concurrencies: list[int], requests: int) -> list[dict]:
    """Rows for ``task`` called directly (``url``) and through the gateway (``gw_url``), alternating rounds."""
    route, bodies, field, ctype = payloads(task)
    backend = served_backend(f"{url}/v1/{task}/{route}", bodies[0], ctype)
    rows = []
    for c in concurrencies:
        total = max(10, requests // ROUNDS)
        got: dict[str, list[float]] = {"direct": [], "gateway": []}
        errors, walls = {"direct": 0, "gateway": 0}, {"direct": 0.0, "gateway": 0.0}
        for _ in range(ROUNDS):
            for via, base in (("direct", url), ("gateway", gw_url)):
                port = int(base.rsplit(":", 1)[1])
                reqs = requests_for(base, task, route, bodies, field, ctype)
                asyncio.run(run_load("127.0.0.1", port, reqs, c, 2 * c))  # warm connections
                res = asyncio.run(run_load("127.0.0.1", port, reqs, c, total, 600))
                got[via] += res.latencies_s
                errors[via] += res.errors
                walls[via] += res.wall_s
        for via in ("direct", "gateway"):
            n = len(got[via]) + errors[via]
            rows.append(row("service", backend, 1, c, got[via], n / walls[via], errors[via], task=task, via=via))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: every task)")
    parser.add_argument("--requests", type=int, default=200, help="requests per row (speech: a tenth, at least 40)")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := sorted(set(tasks) - set(TASKS)):
        parser.error(f"unknown task(s) {', '.join(unknown)}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    rows, notes = [], []
    gateway, gw_url, _ = start_server("gateway", {"tasks": ",".join(tasks)}, timeout=600)
    try:
        for task in tasks:
            # the direct server gets its own BENTOML_HOME over the same models: `bentoml serve` empties its home's
            # metrics folder at start, and the gateway's processes are using the store's
            with tempfile.TemporaryDirectory() as own:
                (Path(own) / "models").symlink_to(home / "models")
                direct, url, _ = start_server(task, {}, env={"BENTOML_HOME": own}, log_dir=Path(own))
                try:
                    requests = args.requests // kind_of(get_task(task)).sample.request_divisor
                    new = compare(task, url, gw_url, concurrencies, requests)
                finally:
                    stop_server(direct)
            rows += new
            for d, g in zip(new[::2], new[1::2], strict=True):
                notes.append(
                    f"{task} c={d['concurrency']}: p50 through the gateway {g['p50_ms']:.2f} ms vs direct "
                    f"{d['p50_ms']:.2f} ms ({g['p50_ms'] / d['p50_ms']:.2f}x); errors {g['errors']} / {d['errors']}"
                )
                print(notes[-1], flush=True)
    finally:
        stop_server(gateway)
    notes.append("both servers run at once on the machine that generates the load; rounds alternate between them")
    path = write("gateway", "cpu", rows, args.out, notes, command="python -m benchmarks.gateway")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
