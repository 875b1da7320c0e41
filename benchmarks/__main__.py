"""``python -m benchmarks <task> [--device cpu|cuda] [--requests N] [--concurrency 1,8,32]``

Measures, in one run, the floor (the model alone, in process; for speech also openai-whisper and the vosk peer)
and the service over HTTP, and writes
``benchmarks/results/<task>-<device>.json`` and ``.md`` in the schema of :mod:`benchmarks.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks import TASKS, get_task
from tasks.kinds import kind_of
from tasks.spec import resolve

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tag", help="store entry (default: <task>:latest)")
    parser.add_argument("--requests", type=int, help="requests per service row (default 400; speech 48)")
    parser.add_argument("--concurrency", help="comma-separated client concurrencies (default 1,8,32; speech 1,4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per floor row")
    parser.add_argument("--clips", type=int, default=24, help="speech: held-out clips per row")
    parser.add_argument("--min-iters", type=int, default=10, help="fewest timed calls per floor row (tests: 3)")
    parser.add_argument("--floor-batch", type=int, default=0, help="larger in-process batch (default 32; tumour 16)")
    parser.add_argument(
        "--quality-images", type=int, default=200, help="palette: held-out synthetic images in the quality columns"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from benchmarks import harness
    from benchmarks.report import write
    from tasks.store import get_entry

    harness.MIN_ITERS, harness.FLOOR_BATCH = args.min_iters, args.floor_batch
    harness.QUALITY_IMAGES = args.quality_images

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda, but torch sees no CUDA GPU on this host", file=sys.stderr)
            return 3
    spec = get_task(args.task)
    kind = kind_of(spec)
    try:
        entry = get_entry(args.tag or f"{args.task}:latest")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    concurrencies = [int(c) for c in (args.concurrency or kind.bench_concurrency).split(",")]
    requests = args.requests or kind.bench_requests
    model_arg = {} if args.tag is None else {"model_tag": args.tag}
    rows, summary = resolve(kind.benchmark_run)(kind, spec, entry, args, concurrencies, requests, model_arg)
    notes = [f"model {entry.tag}", *summary]
    path = write(args.task, args.device, rows, args.out, notes)
    print("\n".join(notes))
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
