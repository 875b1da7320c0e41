"""``python -m training.freezing <task> [--pretrained imagenet|FILE|none] [--key value ...]``: the seed study's
layer-freezing comparison, for any image-classification task.

Trains the task's classifier once per strategy (``none``: train everything; ``half``: the first half of the
feature blocks frozen; ``head``: only the head trains) from the same starting weights (the task's default: its
backbone's packaged ImageNet weights), data, seed and budget (the flags are those of ``python -m training``;
``--freeze`` is what varies), then, as a reference, the same network from random weights with every layer trained;
measures each on the same held-out split and its shifted copy, and writes
``benchmarks/results/freezing-<task>.{json,md}``. Nothing goes to the model store.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from tasks.classifier import FREEZE_STRATEGIES
from training.__main__ import parse_args

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def compare(argv: list[str]) -> dict:
    from tasks import get_task
    from tasks.kinds import IMAGE_CLASSIFICATION, kind_of
    from tasks.spec import resolve
    from training.store import git_commit

    task, cfg = parse_args(argv)
    spec = get_task(task)
    if kind_of(spec) is not IMAGE_CLASSIFICATION:  # the study varies the classifier's feature-block freezing
        raise SystemExit(f"error: {task} is not an {IMAGE_CLASSIFICATION.name} task")
    train = resolve(IMAGE_CLASSIFICATION.trainer)
    rows, data, source = [], None, None
    # the three strategies from the same start, then (from pretrained weights) a reference: random weights, all trained
    runs = [(s, cfg.pretrained) for s in FREEZE_STRATEGIES] + ([("none", None)] if cfg.pretrained else [])
    for strategy, start in runs:
        result = train(spec, replace(cfg, freeze=strategy, pretrained=start, random_baseline=False), data)
        data, source = result.data, source or result.pretrained
        params = list(result.model.parameters())
        m, shifted = result.metrics, result.shifted_metrics
        rows.append(
            {
                "freeze": strategy if start else "none, random start",
                "frozen_blocks": result.frozen_blocks,
                "trainable_params": sum(p.numel() for p in params if p.requires_grad),
                "total_params": sum(p.numel() for p in params),
                "accuracy": round(m["accuracy"], 4),
                "f1": round(m["f1"], 4),  # macro average for more than two classes
                "shifted_accuracy": round(shifted["accuracy"], 4),
                "shifted_f1": round(shifted["f1"], 4),
                "seconds_per_epoch": round(result.fit.seconds / max(result.fit.epochs_run, 1), 1),
                "best_epoch": result.fit.best_epoch,
                "epochs_run": result.fit.epochs_run,
                "seconds": round(result.fit.seconds, 1),
                "test_size": m["n"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "task": task,
        "backbone": spec.backbone,
        "pretrained": source,
        "shifts": list(spec.shifts),
        "config": {k: v for k, v in vars(cfg).items() if k not in ("freeze", "pretrained")},
        "commit": git_commit(),
        "command": "python -m training.freezing " + " ".join(argv),
        "rows": rows,
    }


def markdown(doc: dict) -> str:
    src = doc["pretrained"]
    if not src:
        start = "random weights"
    elif "package" in src:
        start = f"the ImageNet weights of `{src['package']}` (`{src['file']}`, sha256 `{src['sha256'][:12]}`)"
    else:
        start = f"the weights in `{Path(src['file']).name}`"
    lines = [
        f"# Layer freezing on {doc['task']} ({doc['backbone']})",
        "",
        f"Command: `{doc['command']}` (commit `{doc['commit'][:12]}`). Every run starts from {start} (but the "
        "random-start reference, where there is one), with the same "
        f"data, seed and budget ({doc['config']['epochs']} epochs at most, early stopping). Held-out: the usual "
        f"held-out split, and the same images shifted ({', '.join(doc['shifts'])} outside training's ranges).",
        "",
        "| freeze | frozen blocks | trainable parameters | accuracy | F1 (macro) | shifted accuracy | shifted F1 "
        "| best epoch | s / epoch | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        lines.append(
            f"| {r['freeze']} | {r['frozen_blocks']} | {r['trainable_params']:,} of {r['total_params']:,} | "
            f"{r['accuracy']:.4f} | {r['f1']:.4f} | {r['shifted_accuracy']:.4f} | {r['shifted_f1']:.4f} | "
            f"{r['best_epoch']} | {r['seconds_per_epoch']} | {r['seconds']} |"
        )
    return "\n".join(lines) + "\n"


def write_results(path: Path, doc: dict, markdown) -> None:
    """A study's ``<name>.json`` and the ``<name>.md`` that ``markdown(doc)`` renders, side by side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(markdown(doc))
    print(f"wrote {path} and {path.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    doc = compare(argv)
    write_results(RESULTS / f"freezing-{doc['task']}.json", doc, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
