"""``python -m benchmarks.first_answer [--tasks malaria,palette] [--train-args TASK=ARGS ...]``

How soon a fresh machine answers: ``python -m services`` (what ``make serve`` runs) over an empty model store,
the demo models built in the background, and each task asked every few seconds (``GET /v1/<task>/models``) until
it is ready, then sent its kind's sample request (``tasks.kinds``) until that is answered 200. Records, per task,
when it was first seen building, ready and answering (seconds since the launch) and the version that answered.
Writes ``benchmarks/results/first-answer-cpu.{json,md}`` (``--out``); a run with ``--train-args`` (smaller
models) is a check, not the measurement, and says so in its report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.gateway import payloads
from benchmarks.server import ROOT, free_port
from services.versions import NO_MODEL
from tasks import TASKS

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Timeline:
    task: str
    building_s: float | None = None  # first seen building
    ready_s: float | None = None  # first seen ready
    answered_s: float | None = None  # first 200 to the sample request
    trained_s: float | None = None  # first seen serving a trained model (palette answers before it has one)
    model: str | None = None  # the version that answered
    last: str = ""  # the last state's detail


SAMPLES: dict[str, tuple[str, bytes, str | None, str]] = {}


def sample_request(c: httpx.Client, task: str) -> httpx.Response:
    """The task's kind's sample request (what the gateway benchmark sends: ``benchmarks.gateway.payloads``)."""
    if task not in SAMPLES:
        route, bodies, field, ctype = payloads(task)
        SAMPLES[task] = route, bodies[0], field, ctype
    route, body, field, ctype = SAMPLES[task]
    if field:
        return c.post(f"/v1/{task}/{route}", files={field: ("sample", body, ctype)})
    return c.post(f"/v1/{task}/{route}", content=body, headers={"content-type": ctype})


def run(
    tasks: list[str],
    train_args: list[str],
    timeout_s: float,
    home: Path,
    poll_s: float = 5.0,
    on_change: Callable[[list[Timeline], dict], None] | None = None,
) -> tuple[list[Timeline], dict]:
    """Launch the suite over the store at ``home`` and follow every task until it serves a trained model or
    ``timeout_s``; ``on_change(timelines, build status)`` after every change (a report that survives a stop)."""
    port = free_port()
    build_dir = home / "build"
    cmd = [sys.executable, "-m", "services", "--port", str(port), "--build-dir", str(build_dir), *tasks]
    for item in train_args:
        cmd += ["--train-args", item]
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    log = open(home / "serve.log", "w")  # noqa: SIM115 (open for the whole run)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lines = {t: Timeline(t) for t in tasks}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            while time.monotonic() - start < timeout_s and any(t.trained_s is None for t in lines.values()):
                if proc.poll() is not None:
                    raise RuntimeError(f"python -m services exited with {proc.returncode} (log: {home / 'serve.log'})")
                before = [asdict(t) for t in lines.values()]
                for t in lines.values():
                    if t.trained_s is None:
                        follow(c, t, start)
                if on_change is not None and [asdict(t) for t in lines.values()] != before:
                    on_change(list(lines.values()), read_status(build_dir))
                time.sleep(poll_s)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()
    return list(lines.values()), read_status(build_dir)


def read_status(build_dir: Path) -> dict:
    try:
        return json.loads((build_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def follow(c: httpx.Client, t: Timeline, start: float) -> None:
    try:
        r = c.get(f"/v1/{t.task}/models")
        if r.status_code != 200:
            return
        state = r.json()
        now = round(time.monotonic() - start, 1)
        t.last = state["detail"]
        if state["state"] == "building" and t.building_s is None:
            t.building_s = now
        if state["state"] != "ready":
            return
        t.ready_s = t.ready_s or now
        if state["serving"] not in (None, NO_MODEL):
            t.trained_s = now
        if t.answered_s is None:
            answer = sample_request(c, t.task)
            if answer.status_code == 200:
                t.answered_s, t.model = round(time.monotonic() - start, 1), answer.json()["model"]
    except httpx.HTTPError:  # the gateway not up yet
        pass


def report(lines: list[Timeline], status: dict, train_args: list[str]) -> tuple[dict, str]:
    took = {task: s.get("took_s") for task, s in status.get("tasks", {}).items()}
    doc = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "train_args": train_args,
        "tasks": [{**asdict(t), "build_s": took.get(t.task)} for t in lines],
    }
    kind = "a check with smaller models (--train-args), not the demo build" if train_args else "the demo build"
    rows = [
        f"| `{t.task}` | {fmt(t.building_s)} | {fmt(t.ready_s)} | {fmt(t.answered_s)} | {fmt(t.trained_s)} "
        f"| {fmt(took.get(t.task))} | {t.model or t.last} |"
        for t in sorted(lines, key=lambda t: t.answered_s or float("inf"))
    ]
    md = "\n".join(
        [
            "# First answers from a fresh store",
            "",
            f"`python -m benchmarks.first_answer` ({kind}; {doc['machine']}): `python -m services` over an empty",
            "model store, seconds since the launch. The servers come up first; the demo models build in the",
            "background, fastest first (training/demo.py).",
            "",
            "| task | building | ready | first answer | trained model serving | its build | first answer's version "
            "(or state at the end) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    return doc, md


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_answer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: every task)")
    parser.add_argument("--train-args", action="append", default=[], metavar="TASK=ARGS")
    parser.add_argument("--timeout-min", type=float, default=150)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if unknown := sorted(set(tasks) - set(TASKS)):
        parser.error(f"unknown task(s) {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)

    def write(lines: list[Timeline], status: dict) -> str:
        doc, md = report(lines, status, args.train_args)
        (args.out / "first-answer-cpu.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.out / "first-answer-cpu.md").write_text(md)
        return md

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop still stops the suite it started
    try:
        with tempfile.TemporaryDirectory(prefix="first-answer-") as tmp:
            lines, status = run(tasks, args.train_args, args.timeout_min * 60, Path(tmp), on_change=write)
    except KeyboardInterrupt:  # stopped early: the report holds what was seen until then
        print(f"stopped; {args.out / 'first-answer-cpu.md'} holds what was seen until now", file=sys.stderr)
        return 130
    print(write(lines, status))
    return 0 if all(t.trained_s is not None for t in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
