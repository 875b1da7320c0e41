"""``python -m training.demo [--force] [TASK ...]``: build the demo models the suite serves.

For each task (default: all registered) whose model store has no entry yet, train on the task's synthetic data
with its declared defaults, then export (ONNX; CTranslate2 for speech) with the parity check. Progress bars show
each step.
"""

from __future__ import annotations

import argparse
import sys

from tasks import TASKS


def has_entry(task: str) -> bool:
    """Whether the store holds an entry of ``task`` with the export its service serves."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        entries = bentoml.models.list(task)
    except NotFound:
        return False
    return any(m.info.metadata.get(f"export_{TASKS[task].export_format}") for m in entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all ({', '.join(sorted(TASKS))})")
    parser.add_argument("--force", action="store_true", help="retrain even when the store has an entry")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(TASKS))}")
    from exporters.__main__ import main as export_main
    from training.__main__ import main as train_main

    for task in args.tasks or sorted(TASKS):
        if has_entry(task) and not args.force:
            print(f"{task}: the store has an exported entry; skipping (--force retrains)")
            continue
        print(f"{task}: training the demo model (synthetic data, defaults from tasks/{task}.py)")
        if train_main([task]) != 0 or export_main([task, "--format", TASKS[task].export_format]) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
