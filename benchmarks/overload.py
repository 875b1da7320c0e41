"""``python -m benchmarks.overload [--task tumor] [--factor 4] [--seconds 20] [--budget-s 1]``: admission control
at a multiple of a service's capacity.

1. Capacity: the service (``bentoml serve``, default arguments but ``latency_budget_s``) under a closed loop of 8
   connections; capacity = its throughput.
2. Overload: Poisson arrivals at ``--factor`` times that rate for ``--seconds``, open loop
   (:func:`benchmarks.load.run_open_loop`: latency from each request's due time).

What admission control promises, and what this measures: every request past the latency budget is refused with
503 and ``Retry-After`` at once (the 503s' latency), none ends in a 504, and every admitted request succeeds
(statuses). A third row, the no-op route's closed-loop throughput, is the serving stack's own ceiling: near it,
even instant refusals queue in front of the service. Writes
``benchmarks/results/overload-<task>-x<factor>-cpu.{json,md}`` in the shared schema (``phase``, ``status``,
``rate_per_s`` columns).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

from benchmarks.gateway import payloads, requests_for
from benchmarks.harness import served_backend
from benchmarks.load import raw_request, run_load, run_open_loop
from benchmarks.report import row, write
from benchmarks.server import start_server, stop_server

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__)
    parser.add_argument("--task", default="tumor")
    parser.add_argument("--factor", type=float, default=4.0, help="offered rate / measured capacity")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--budget-s", type=float, default=1.0, help="the service's latency_budget_s")
    parser.add_argument("--concurrency", type=int, default=8, help="connections of the capacity measurement")
    parser.add_argument("--requests", type=int, default=400, help="requests of the capacity measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    route, raw, field, ctype = payloads(args.task)
    proc, url, _ = start_server(args.task, {"latency_budget_s": args.budget_s, "noop_route": True})
    try:
        reqs = requests_for(url, args.task, route, raw, field, ctype)
        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
        backend = served_backend(f"{url}/v1/{args.task}/{route}", raw[0], ctype)
        c = args.concurrency
        asyncio.run(run_load(host, port, reqs, c, 10 * c))  # warm-up
        closed = asyncio.run(run_load(host, port, reqs, c, args.requests))
        capacity = closed.statuses.get(200, 0) / closed.wall_s  # answers per second (a refused one is none)
        print(f"capacity (closed loop, {c} connections): {capacity:.1f} req/s, statuses {closed.statuses}")
        noop_reqs = [raw_request(host, port, f"/v1/{args.task}/noop", b"x", "text/plain")]
        noop = asyncio.run(run_load(host, port, noop_reqs, 8, 1000))
        ceiling = 1000 / noop.wall_s  # the serving stack alone: what even instant refusals cannot exceed
        rate = args.factor * capacity
        seen = asyncio.run(run_open_loop(host, port, reqs, rate, args.seconds))
    finally:
        stop_server(proc)

    lat = seen.latencies_s
    rows = [row("service", backend, 1, c, closed.latencies_s, capacity, closed.errors, phase="capacity", status=200)]
    rows.append(row("noop", "pipeline", 1, 8, noop.latencies_s, ceiling, noop.errors, phase="ceiling", status=200))
    for status in sorted(lat):
        rows.append(
            row(
                "service",
                backend,
                1,
                seen.peak_in_flight,
                lat[status],
                len(lat[status]) / args.seconds,
                0 if status in (200, 503) else len(lat[status]),
                phase=f"overload x{args.factor:g}",
                status=status,
                rate_per_s=round(rate, 1),
            )
        )
    ok, refused = lat.get(200, []), lat.get(503, [])
    others = {s: len(v) for s, v in lat.items() if s not in (200, 503)}
    notes = [
        f"task {args.task}, latency_budget_s {args.budget_s:g}; capacity {capacity:.1f} req/s (closed loop, {c} "
        f"connections); offered {rate:.1f} req/s ({args.factor:g}x) for {args.seconds:g} s: {seen.sent} requests",
        f"the serving stack's own ceiling (the no-op route, 8 connections): {ceiling:.0f} req/s, so the offered rate "
        f"is {rate / ceiling:.1%} of what the server can parse and answer at all, refusals included",
        f"admitted and answered 200: {len(ok)} (p50 {np.median(ok) * 1000:.0f} ms, p99 "
        f"{np.percentile(ok, 99) * 1000:.0f} ms)"
        if ok
        else "admitted: none",
        f"refused with 503: {len(refused)} (p50 {np.median(refused) * 1000:.1f} ms, p99 "
        f"{np.percentile(refused, 99) * 1000:.1f} ms, max {max(refused) * 1000:.1f} ms), "
        f"{seen.missing_retry_after} without Retry-After"
        if refused
        else "refused: none",
        f"any other outcome (504, 5xx, 0: no answer): {others or 'none'}"
        + (f" (no answer: {seen.failures})" if seen.failures else ""),
        "latency runs from each request's due time; the generator shares the server's 2 cores",
    ]
    print("\n".join(notes))
    command = "python -m benchmarks.overload " + " ".join(argv if argv is not None else sys.argv[1:])
    out = write(f"overload-{args.task}-x{args.factor:g}", "cpu", rows, args.out, notes, command=command.strip())
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if not others and not seen.missing_retry_after else 1


if __name__ == "__main__":
    sys.exit(main())
