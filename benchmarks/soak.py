"""``python -m benchmarks.soak [--soak-s 600] [--step-s 20]``: the suite's capacity under a stated SLO, then a soak.

The gateway serves every task (``bentoml serve services.gateway:Gateway``, as ``make serve`` does). An open-loop
generator sends a fixed mix of requests (per 11: malaria 4, tumour 2, keyphrase 2, palette 2, speech 1; the
benchmarks' own payloads) with Poisson arrivals at a set rate. Latency runs from the moment a request was due to its
last byte, so a slow server cannot slow the generator down and hide its own queueing (no coordinated omission).

1. Ramp: rates rise by ``--factor`` each ``--step-s`` seconds (30) until a step breaks the SLO (any task's p99 over its
   limit, or any error). Capacity = the last rate that held.
2. Soak: ``--soak-s`` seconds at 70 % of capacity; errors, per-task p99 and the resident memory of every server
   process (sampled every 5 s) are recorded; memory growth = last minute's mean vs the first minute's.

Writes ``benchmarks/results/soak-cpu.{json,md}`` in the shared schema (``phase``, ``rate_per_s``, ``task`` columns;
``concurrency`` is the most requests in flight at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.gateway import payloads
from benchmarks.load import multipart_body
from benchmarks.report import row, write
from benchmarks.server import start_server, stop_server

RESULTS = Path(__file__).resolve().parent / "results"
MIX = {"malaria": 4, "tumor": 2, "keyphrase": 2, "palette": 2, "asr": 1}
# p99 limits, about ten times each request's unloaded p50 on 2 cores (benchmarks/results/gateway-cpu.md)
SLO_MS = {"malaria": 100.0, "tumor": 200.0, "keyphrase": 500.0, "palette": 400.0, "asr": 3000.0}


def requests_by_task() -> dict[str, list[tuple[str, bytes, str]]]:
    """(path, body, content type) per task, as clients send them."""
    out = {}
    for task in MIX:
        route, bodies, field, ctype = payloads(task)
        path = f"/v1/{task}/{route}"
        if field:
            out[task] = [(path, *multipart_body(field, f"f{i}", b, ctype)) for i, b in enumerate(bodies)]
        else:
            out[task] = [(path, b, ctype) for b in bodies]
    return out


class Phase:
    """What one stretch of load saw: latencies and errors per task, the most requests in flight."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {t: [] for t in MIX}
        self.errors: dict[str, int] = dict.fromkeys(MIX, 0)
        self.in_flight = self.peak = 0
        self.statuses: dict[int, int] = {}

    def p99_ms(self, task: str) -> float:
        lat = self.latencies[task]
        return float(np.percentile(lat, 99) * 1000) if lat else float("nan")

    def holds(self) -> bool:
        return not any(self.errors.values()) and all(self.p99_ms(t) <= SLO_MS[t] for t in MIX if self.latencies[t])


async def offer(url: str, reqs: dict, rate: float, seconds: float, seed: int, on_tick=None) -> Phase:
    """Poisson arrivals of ``reqs`` (:func:`requests_by_task`) at ``rate`` per second for ``seconds``; returns when
    every request has finished."""
    import aiohttp

    rng = np.random.default_rng(seed)
    tasks, weights = list(MIX), np.array(list(MIX.values()), float)
    phase = Phase()
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(task: str, due: float) -> None:
            path, body, ctype = reqs[task][rng.integers(len(reqs[task]))]
            phase.in_flight += 1
            phase.peak = max(phase.peak, phase.in_flight)
            try:
                async with session.post(path, data=body, headers={"content-type": ctype}) as r:
                    await r.read()
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            phase.in_flight -= 1
            phase.statuses[status] = phase.statuses.get(status, 0) + 1
            if status == 200:
                phase.latencies[task].append(time.perf_counter() - due)
            else:
                phase.errors[task] += 1

        start = time.perf_counter()
        due, running, next_tick = start, set(), start
        while due - start < seconds:
            due += rng.exponential(1 / rate)
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = tasks[rng.choice(len(tasks), p=weights / weights.sum())]
            job = asyncio.create_task(one(task, due))
            running.add(job)
            job.add_done_callback(running.discard)
            if on_tick and time.perf_counter() >= next_tick:
                on_tick()
                next_tick += 5
        await asyncio.gather(*running)
    return phase


def memory_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process under it (the gateway and every task's workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that just exited
            total += p.memory_info().rss
    return total / 2**20


def rows_for(phase: Phase, name: str, rate: float, seconds: float) -> list[dict]:
    return [
        row(
            "service",
            "suite",
            1,
            phase.peak,
            phase.latencies[t],
            (len(phase.latencies[t]) + phase.errors[t]) / seconds,
            phase.errors[t],
            phase=name,
            rate_per_s=round(rate, 2),
            task=t,
            slo_p99_ms=SLO_MS[t],
        )
        for t in MIX
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--start-rate", type=float, default=6.0, help="first ramp step, requests/s")
    parser.add_argument("--factor", type=float, default=1.25, help="rate growth per ramp step")
    parser.add_argument("--step-s", type=float, default=30.0)
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    reqs = requests_by_task()
    gateway, url, _ = start_server("gateway", {}, timeout=600)
    rows, notes = [], []
    try:
        asyncio.run(offer(url, reqs, 2.0, 5.0, seed=0))  # warm every task and connection
        rate, capacity, step = args.start_rate, 0.0, 0
        while True:
            phase = asyncio.run(offer(url, reqs, rate, args.step_s, seed=step + 1))
            rows += rows_for(phase, f"ramp {step}", rate, args.step_s)
            worst = ", ".join(f"{t} {phase.p99_ms(t):.0f}" for t in MIX)
            print(f"ramp {rate:6.2f}/s: p99 ms {worst}; errors {sum(phase.errors.values())}", flush=True)
            if not phase.holds():
                break
            capacity, rate, step = rate, rate * args.factor, step + 1
        if capacity == 0:
            raise SystemExit(f"even {args.start_rate}/s breaks the SLO: lower --start-rate")
        soak_rate = 0.7 * capacity
        samples: list[tuple[float, float]] = []
        t0 = time.perf_counter()
        tick = lambda: samples.append((time.perf_counter() - t0, memory_mb(gateway.pid)))  # noqa: E731
        tick()
        phase = asyncio.run(offer(url, reqs, soak_rate, args.soak_s, seed=1000, on_tick=tick))
        tick()
        rows += rows_for(phase, "soak", soak_rate, args.soak_s)
        first = np.mean([m for s, m in samples if s <= 60])
        last = np.mean([m for s, m in samples if s >= samples[-1][0] - 60])
        growth = (last - first) / first * 100
        errors = sum(phase.errors.values())
        notes += [
            f"SLO (p99 per task, ms): {', '.join(f'{t} {v:.0f}' for t, v in SLO_MS.items())}; mix per 11 requests: "
            + ", ".join(f"{t} {w}" for t, w in MIX.items()),
            f"capacity: {capacity:.2f} requests/s (the last ramp step within the SLO, no errors); the next step, "
            f"{capacity * args.factor:.2f}/s, broke it",
            f"soak: {args.soak_s:.0f} s at {soak_rate:.2f} requests/s (70 %): {errors} errors, statuses "
            f"{dict(sorted(phase.statuses.items()))}, p99 ms " + ", ".join(f"{t} {phase.p99_ms(t):.1f}" for t in MIX),
            f"memory of all server processes: {first:.0f} MB in the first minute, {last:.0f} MB in the last "
            f"({growth:+.1f} %); min {min(m for _, m in samples):.0f}, max {max(m for _, m in samples):.0f} MB",
            "open loop: latency from when each request was due (Poisson arrivals), so queueing is counted; the "
            "generator shares the 2 cores with the servers",
        ]
        for n in notes:
            print(n, flush=True)
    finally:
        stop_server(gateway)
    path = write("soak", "cpu", rows, args.out, notes, command="python -m benchmarks.soak")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
