"""``python -m training <task> [--data DIR | --synthetic N] [--config FILE] [--key value ...]``

Fits the task's model, evaluates it on held-out data and writes a model-store entry ``<task>:<version>``.
Every field of :class:`training.config.TrainConfig` is a flag (``--batch-size 32``); YAML sets defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from tasks import TASKS, get_task
from tasks.kinds import kind_of
from tasks.spec import resolve
from training.config import TrainConfig, load_yaml, override, validate


def parse_args(argv: list[str] | None) -> tuple[str, TrainConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--config", help="YAML file of TrainConfig fields (CLI flags override it)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name != "task":
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=None,
                help=f"{hints[f.name]} (default: {f.default})",
            )
    ns = parser.parse_args(argv)
    spec = get_task(ns.task)
    values = dict(spec.train_defaults)
    if ns.config:
        values.update(load_yaml(ns.config))
    values.update({k: v for k, v in vars(ns).items() if k not in ("task", "config") and v is not None})
    if "data" in values and values.get("data") and "synthetic" not in {k for k, v in vars(ns).items() if v}:
        values["synthetic"] = 0  # --data replaces the task's synthetic default
    cfg = override(TrainConfig(task=ns.task), values)
    validate(cfg)
    return ns.task, cfg


def main(argv: list[str] | None = None) -> int:
    try:
        task, cfg = parse_args(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec = get_task(task)
    kind = kind_of(spec)
    train, save = resolve(kind.trainer), resolve(kind.store_writer)
    try:
        result = train(spec, cfg)
    except (FileNotFoundError, ValueError) as e:  # data that cannot be read: say what and where
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        tag = save(spec, result, cfg)
    finally:
        result.cleanup()
    keys = kind.reported_metrics
    report = {"tag": tag, "test": {k: result.metrics[k] for k in keys if k in result.metrics}}
    if shifted := getattr(result, "shifted_metrics", None):  # classifiers: the shifted held-out set too
        report["shifted"] = {k: shifted[k] for k in keys if k in shifted}
    if baseline := getattr(result, "baseline", None):
        report["random_init"] = {
            "test": {k: baseline.metrics[k] for k in keys if k in baseline.metrics},
            "shifted": {k: baseline.shifted_metrics[k] for k in keys if k in baseline.shifted_metrics},
        }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
