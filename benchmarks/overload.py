"""``python -m benchmarks.overload [--task tumor] [--factor 4] [--seconds 20] [--budget-s 1]``: admission control
at a multiple of a service's capacity.

1. Capacity: the service (``bentoml serve``, default arguments but ``latency_budget_s``) under a closed loop of 8
   connections; capacity = its throughput.
2. Overload: Poisson arrivals at ``--factor`` times that rate for ``--seconds``, open loop (latency runs from the
   moment a request was due, so a slow server cannot slow the generator down and hide its queueing).

What admission control promises, and what this measures: every request past the latency budget is refused with
503 and ``Retry-After`` at once (the 503s' latency), none ends in a 504, and every admitted request succeeds
(statuses). Writes ``benchmarks/results/overload-cpu.{json,md}`` in the shared schema (``phase``, ``status``,
``rate_per_s`` columns).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gateway import payloads, requests_for
from benchmarks.harness import served_backend
from benchmarks.load import multipart_body, run_load
from benchmarks.report import row, write
from benchmarks.server import start_server, stop_server

RESULTS = Path(__file__).resolve().parent / "results"


async def offer(url: str, bodies: list[tuple[str, bytes, str]], rate: float, seconds: float, seed: int = 0) -> dict:
    """Poisson arrivals at ``rate`` per second for ``seconds``; per status, the latencies; Retry-After seen."""
    import aiohttp

    rng = np.random.default_rng(seed)
    seen: dict[int, list[float]] = {}
    missing_retry_after = 0
    peak = in_flight = 0

    async with aiohttp.ClientSession(
        url, timeout=aiohttp.ClientTimeout(total=120), connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(i: int, due: float) -> None:
            nonlocal in_flight, peak, missing_retry_after
            path, body, ctype = bodies[i % len(bodies)]
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                async with session.post(path, data=body, headers={"content-type": ctype}) as r:
                    await r.read()
                    status = r.status
                    if status == 503 and "retry-after" not in r.headers:
                        missing_retry_after += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            in_flight -= 1
            seen.setdefault(status, []).append(time.perf_counter() - due)

        start = due = time.perf_counter()
        running: set[asyncio.Task] = set()
        i = 0
        while due - start < seconds:
            due += rng.exponential(1 / rate)
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            job = asyncio.create_task(one(i, due))
            running.add(job)
            job.add_done_callback(running.discard)
            i += 1
        await asyncio.gather(*running)
    return {"latencies": seen, "missing_retry_after": missing_retry_after, "peak": peak, "sent": i}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__)
    parser.add_argument("--task", default="tumor")
    parser.add_argument("--factor", type=float, default=4.0, help="offered rate / measured capacity")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--budget-s", type=float, default=1.0, help="the service's latency_budget_s")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    route, raw, field, ctype = payloads(args.task)
    proc, url, _ = start_server(args.task, {"latency_budget_s": args.budget_s})
    try:
        reqs = requests_for(url, args.task, route, raw, field, ctype)
        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
        backend = served_backend(f"{url}/v1/{args.task}/{route}", raw[0], ctype)
        asyncio.run(run_load(host, port, reqs, 8, 80))  # warm-up
        closed = asyncio.run(run_load(host, port, reqs, 8, 400))
        capacity = 400 / closed.wall_s
        print(f"capacity (closed loop, 8 connections): {capacity:.1f} req/s, errors {closed.errors}")
        path = f"/v1/{args.task}/{route}"
        bodies = [
            (path, *multipart_body(field, f"f{i}", b, ctype)) if field else (path, b, ctype) for i, b in enumerate(raw)
        ]
        rate = args.factor * capacity
        seen = asyncio.run(offer(url, bodies, rate, args.seconds))
    finally:
        stop_server(proc)

    lat = seen["latencies"]
    rows = [row("service", backend, 1, 8, closed.latencies_s, capacity, closed.errors, phase="capacity", status=200)]
    for status in sorted(lat):
        rows.append(
            row(
                "service",
                backend,
                1,
                seen["peak"],
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
        f"task {args.task}, latency_budget_s {args.budget_s:g}; capacity {capacity:.1f} req/s (closed loop, 8 "
        f"connections); offered {rate:.1f} req/s ({args.factor:g}x) for {args.seconds:g} s: {seen['sent']} requests",
        f"admitted and answered 200: {len(ok)} (p50 {np.median(ok) * 1000:.0f} ms, p99 "
        f"{np.percentile(ok, 99) * 1000:.0f} ms)"
        if ok
        else "admitted: none",
        f"refused with 503: {len(refused)} (p50 {np.median(refused) * 1000:.1f} ms, p99 "
        f"{np.percentile(refused, 99) * 1000:.1f} ms, max {max(refused) * 1000:.1f} ms), "
        f"{seen['missing_retry_after']} without Retry-After"
        if refused
        else "refused: none",
        f"any other outcome (504, 5xx, connection errors): {others or 'none'}",
        "latency runs from each request's due time; the generator shares the server's 2 cores",
    ]
    print("\n".join(notes))
    out = write("overload", "cpu", rows, args.out, notes)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if not others and not seen["missing_retry_after"] else 1


if __name__ == "__main__":
    sys.exit(main())
