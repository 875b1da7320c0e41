"""Writing model-store entries ``<task>:<version>`` (BentoML model store) after training.

Each entry's metadata says how it was made (config, data fingerprint, git commit, time, library versions)
and how good it is (held-out metrics), plus what serving needs (labels, input size, normalisation) and a
SHA-256 per file, checked when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import subprocess
from pathlib import Path

from tasks.store import clean, sha256_file


def git_commit() -> str:
    """The source commit, with ``+dirty`` when the work tree has changes; ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save_classifier(spec, result, cfg) -> str:
    """Write a trained image classifier as a new store entry; returns its tag ``name:version``."""
    import bentoml
    import torch
    import torchvision

    from tasks.classifier import checkpoint

    metadata = {
        "task": spec.name,
        "kind": spec.kind,
        "labels": list(spec.labels),
        "input_size": result.input_size,
        "normalization": {"mean": list(spec.mean), "std": list(spec.std), "scale": "1/255"},
        "arch": {"backbone": spec.backbone, "num_classes": spec.num_classes},
        "config": dataclasses.asdict(cfg),
        "metrics": {"test": result.metrics, "held_out": result.data.source},
        "training": {
            "best_epoch": result.fit.best_epoch,
            "epochs_run": result.fit.epochs_run,
            "stopped_early": result.fit.stopped_early,
            "seconds": round(result.fit.seconds, 1),
            "frozen_feature_blocks": result.frozen_blocks,
            "history": result.fit.history,
            "train_size": len(result.data.train.y),
            "val_size": len(result.data.val.y),
        },
        "dataset": {"fingerprint": result.data.fingerprint, "source": result.data.source},
        "git_commit": git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
        },
    }
    labels = {"task": spec.name, "kind": spec.kind, "data": "synthetic" if cfg.synthetic else "folder"}
    with bentoml.models.create(cfg.name or spec.name, labels=labels, metadata=clean(metadata)) as entry:
        path = Path(entry.path) / "model.pt"
        torch.save(checkpoint(result.model, spec), path)
        entry.info.metadata["files"] = {"model.pt": sha256_file(path)}
    return str(entry.tag)
