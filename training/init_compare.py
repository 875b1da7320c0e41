"""``python -m training.init_compare [TASK ...] [--key value ...]``: ImageNet start vs random weights.

For each image-classification task (default: those whose backbone has packaged ImageNet weights), trains the
task's demo model twice with the same data, seed and budget (the flags are those of ``python -m training``; the
task's defaults otherwise): once from its backbone's ImageNet weights, once from random weights. Both are measured
on the usual held-out split and on the same images shifted outside training's ranges (training/datasets/shift.py).
Writes ``benchmarks/results/pretrained-vs-random.{json,md}``. Nothing goes to the model store (the demo build
records the same comparison in each entry: ``random_baseline`` in the task's defaults).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from training.freezing import RESULTS, write_results


def compare(task: str, flags: list[str]) -> dict:
    from tasks import get_task
    from tasks.kinds import IMAGE_CLASSIFICATION, kind_of
    from tasks.spec import resolve
    from training.__main__ import parse_args

    _, cfg = parse_args([task, *flags])
    spec = get_task(task)
    if kind_of(spec) is not IMAGE_CLASSIFICATION:
        raise SystemExit(f"error: {task} is not an {IMAGE_CLASSIFICATION.name} task")
    result = resolve(IMAGE_CLASSIFICATION.trainer)(spec, replace(cfg, pretrained="imagenet", random_baseline=True))

    def row(start: str, r) -> dict:
        return {
            "start": start,
            "accuracy": round(r.metrics["accuracy"], 4),
            "f1": round(r.metrics["f1"], 4),
            "shifted_accuracy": round(r.shifted_metrics["accuracy"], 4),
            "shifted_f1": round(r.shifted_metrics["f1"], 4),
            "best_epoch": r.fit.best_epoch,
            "epochs_run": r.fit.epochs_run,
            "seconds": round(r.fit.seconds, 1),
        }

    cfg_doc = {k: v for k, v in vars(cfg).items() if k not in ("pretrained", "random_baseline")}
    return {
        "task": task,
        "backbone": spec.backbone,
        "pretrained": result.pretrained,
        "shifts": list(spec.shifts),
        "held_out": result.data.source,
        "test_size": result.metrics["n"],
        "config": cfg_doc,
        "rows": [row("ImageNet", result), row("random", result.baseline)],
    }


def markdown(doc: dict) -> str:
    lines = [
        "# ImageNet start vs random weights",
        "",
        "Each task's classifier, trained twice with the same data, seed and budget (epochs at most, early stopping "
        "on validation loss), once from its backbone's packaged ImageNet weights and once from random weights. "
        "Held-out: the generator's usual held-out seed, and the same images shifted outside training's ranges "
        "(training/datasets/shift.py).",
        "",
        "| task | backbone | start | accuracy | F1 | shifted accuracy | shifted F1 | best / run epochs | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in doc["tasks"]:
        for r in t["rows"]:
            lines.append(
                f"| {t['task']} | {t['backbone']} | {r['start']} | {r['accuracy']:.4f} | {r['f1']:.4f} | "
                f"{r['shifted_accuracy']:.4f} | {r['shifted_f1']:.4f} | {r['best_epoch']} / {r['epochs_run']} | "
                f"{r['seconds']} |"
            )
    lines += ["", "Commands, held-out sets and shifts:", ""]
    for t in doc["tasks"]:
        lines.append(
            f"- {t['task']}: `{t['command']}` (commit `{t['commit'][:12]}`, {t['host']}); {t['held_out']}; "
            f"shifted: {', '.join(t['shifts'])}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.report import host_description
    from tasks import TASKS
    from training.pretrained import BACKBONE_SOURCES
    from training.store import git_commit

    argv = list(sys.argv[1:] if argv is None else argv)
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    tasks, flags = argv[:split], argv[split:]
    tasks = tasks or [n for n, s in TASKS.items() if getattr(s, "backbone", None) in BACKBONE_SOURCES]
    path = RESULTS / "pretrained-vs-random.json"
    # One file for every task: a task measured again replaces its own entry, the others stay as they were.
    kept = json.loads(path.read_text())["tasks"] if path.is_file() else []
    host = host_description("cuda" if torch.cuda.is_available() and "cpu" not in flags else "cpu")
    for task in tasks:
        doc = compare(task, flags)
        doc.update(command=f"python -m training.init_compare {task} {' '.join(flags)}".strip(), commit=git_commit())
        doc["host"] = host
        print(json.dumps({"task": task, "rows": doc["rows"]}), flush=True)
        kept = [t for t in kept if t["task"] != task] + [doc]
        write_results(path, {"tasks": kept}, markdown)  # after each task: a later failure keeps the earlier ones
    return 0


if __name__ == "__main__":
    sys.exit(main())
