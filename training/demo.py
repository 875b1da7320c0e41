"""``python -m training.demo [--force] [--status FILE] [--train-args TASK=ARGS ...] [TASK ...]``: build the demo
models the suite serves.

For each task (default: all registered) whose model store has no exported entry yet, fastest build first, train on
the task's synthetic data with its declared defaults, then export (ONNX; CTranslate2 for speech) with the parity
check. Progress bars show each step; ``--status FILE`` also writes each task's state (queued, training with its
epochs, exporting, done, failed with the reason) to a JSON file, which the services show while their model builds
(``python -m services`` runs this in the background and passes the file on). A task that fails does not stop the
others; the exit status says whether any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tasks import TASKS

# Minutes each demo build takes on 2 CPU cores, train and export (docs/results.md, `python -m training.demo TASK`):
# the order builds run in, fastest first, and what the progress shown while one runs is measured against. Timed
# alone: thermal, histopathology, malaria, tumour (each classifier: the ImageNet start and its random-init twin)
# and speech; keyphrase from its e5 fine-tune with the demo's data and budget; palette an estimate.
BUILD_MINUTES = {
    "thermal": 12,
    "histopathology": 18,
    "palette": 25,
    "tumor": 27,
    "malaria": 28,
    "asr": 29,
    "keyphrase": 47,
}


def has_entry(task: str) -> bool:
    """Whether the store holds an entry of ``task`` with the export its service serves."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        entries = bentoml.models.list(task)
    except NotFound:
        return False
    return any(m.info.metadata.get(f"export_{TASKS[task].export_format}") for m in entries)


def build_order(tasks: list[str]) -> list[str]:
    """``tasks`` fastest build first (a task with no measured build time last, in the order given)."""
    return sorted(tasks, key=lambda t: BUILD_MINUTES.get(t, float("inf")))


class Status:
    """The build's state, rewritten whole (atomically: a reader never sees half a file) at every change."""

    def __init__(self, path: str | Path | None, tasks: list[str], doc: dict | None = None) -> None:
        self.path = Path(path) if path else None
        self.doc = doc or {"started": time.time(), "tasks": {t: {"state": "queued"} for t in tasks}}
        self.save()

    def set(self, task: str, **fields: object) -> None:
        self.doc["tasks"][task].update(fields)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".build-status-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.doc, f)
        os.replace(tmp, self.path)


def abandon(path: Path, reason: str) -> None:
    """Mark every build of the status file at ``path`` that had not finished as failed (the builder died)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for state in doc.get("tasks", {}).values():
        if state.get("state") not in ("done", "failed"):
            state.update(state="failed", reason=reason)
    Status(path, [], doc)  # written back


def build(task: str, train_args: list[str], status: Status) -> bool:
    """Train and export ``task``'s demo model; the state and any failure's reason go to ``status``."""
    from exporters.__main__ import main as export_main
    from training import progress
    from training.__main__ import main as train_main

    started = time.time()
    expected = BUILD_MINUTES.get(task, 0) * 60 or None
    status.set(task, state="training", started=started, expected_s=expected)
    progress.listener = lambda epoch, epochs: status.set(task, epoch=epoch, epochs=epochs)
    try:
        if train_main([task, *train_args]) != 0:
            raise RuntimeError("training failed (the build log says why)")
        status.set(task, state="exporting")
        if export_main([task, "--format", TASKS[task].export_format]) != 0:
            raise RuntimeError("the export failed its parity check or could not run (the build log says why)")
    except (Exception, SystemExit) as e:  # one task's failure (argparse exits on bad flags) does not stop the others
        traceback.print_exc()
        status.set(task, state="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0], finished=time.time())
        return False
    finally:
        progress.listener = None
    took = time.time() - started
    status.set(task, state="done", finished=time.time(), took_s=round(took, 1))
    print(f"{task}: demo model built in {took / 60:.1f} min")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all ({', '.join(sorted(TASKS))})")
    parser.add_argument("--force", action="store_true", help="retrain even when the store has an entry")
    parser.add_argument("--status", metavar="FILE", help="write each task's build state to this JSON file")
    parser.add_argument(
        "--train-args",
        action="append",
        default=[],
        metavar="TASK=ARGS",
        help="extra `python -m training` flags for one task (a smaller build: 'malaria=--synthetic 64 --epochs 1')",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(TASKS))}")
    extra: dict[str, list[str]] = {}
    for item in args.train_args:
        task, sep, flags = item.partition("=")
        if not sep or task not in TASKS:
            parser.error(f"--train-args: expected TASK=FLAGS with a known task, got {item!r}")
        extra[task] = shlex.split(flags)
    todo = []
    for task in build_order(args.tasks or list(TASKS)):
        if has_entry(task) and not args.force:
            print(f"{task}: the store has an exported entry; skipping (--force retrains)")
        else:
            todo.append(task)
    status = Status(args.status, todo)
    failed = []
    for task in todo:
        print(f"{task}: training the demo model (synthetic data, defaults from its task spec)", flush=True)
        if not build(task, extra.get(task, []), status):
            failed.append(task)
    if failed:
        print(f"demo builds failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
