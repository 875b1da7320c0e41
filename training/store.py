"""Writing model-store entries ``<task>:<version>`` (BentoML model store) after training.

Each entry's metadata says how it was made (config, data fingerprint, git commit, time, library versions)
and how good it is (held-out metrics), plus what serving needs (labels, input size, normalisation) and a
SHA-256 per file, checked when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import shutil
import subprocess
from pathlib import Path

from tasks.store import clean, sha256_file


def git_commit() -> str:
    """The source commit, with ``+dirty`` when the work tree has changes; ``SUITE_COMMIT`` names it for a copy
    of the tree without git (the GPU machine); ``unknown`` otherwise."""
    if os.environ.get("SUITE_COMMIT"):
        return os.environ["SUITE_COMMIT"]
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


def provenance(spec, cfg, **versions: str) -> dict:
    """What every entry records about how it was made."""
    import torch

    return {
        "task": spec.name,
        "kind": spec.kind,
        "labels": list(spec.labels),
        "config": dataclasses.asdict(cfg),
        "git_commit": git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__), **versions},
    }


def fit_summary(fit) -> dict:
    """What every entry records of a :class:`~training.fit.FitResult`."""
    return {
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "seconds": round(fit.seconds, 1),
        "history": fit.history,
    }


def write_entry(spec, cfg, metadata: dict, files: dict[str, Path], data_kind: str) -> str:
    """Create ``<name>:<version>`` with ``metadata``, copy ``files`` (entry name -> source path) in and record
    their SHA-256. Returns the tag."""
    import bentoml

    labels = {"task": spec.name, "kind": spec.kind, "data": data_kind}
    with bentoml.models.create(cfg.name or spec.name, labels=labels, metadata=clean(metadata)) as entry:
        sums = {}
        for name, src in files.items():
            dst = Path(entry.path) / name
            shutil.copyfile(src, dst)
            sums[name] = sha256_file(dst)
        entry.info.metadata["files"] = sums
    return str(entry.tag)


def save_classifier(spec, result, cfg) -> str:
    """Write a trained image classifier as a new store entry; returns its tag ``name:version``."""
    import tempfile

    import torch
    import torchvision

    from tasks.classifier import checkpoint

    metadata = {
        **provenance(spec, cfg, torchvision=str(torchvision.__version__)),
        "input_size": result.input_size,
        "normalization": {"mean": list(spec.mean), "std": list(spec.std), "scale": "1/255"},
        "arch": {"backbone": spec.backbone, "num_classes": spec.num_classes},
        "pretrained": result.pretrained or "none (random weights)",
        "metrics": {
            "test": result.metrics,
            "held_out": result.data.source,
            "shifted": result.shifted_metrics,
            "shifted_held_out": f"the held-out images with {', '.join(spec.shifts)} outside training's ranges "
            "(training/datasets/shift.py)",
            **({"random_init": _baseline(result.baseline)} if result.baseline else {}),
        },
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
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(checkpoint(result.model, spec), path)
        return write_entry(spec, cfg, metadata, {"model.pt": path}, "synthetic" if cfg.synthetic else "folder")


def _baseline(twin) -> dict:
    """The random-init twin's numbers, beside the entry's own: same data, budget and held-out sets."""
    return {
        "test": twin.metrics,
        "shifted": twin.shifted_metrics,
        "best_epoch": twin.fit.best_epoch,
        "epochs_run": twin.fit.epochs_run,
        "seconds": round(twin.fit.seconds, 1),
    }


def save_detector(spec, result, cfg) -> str:
    """Write a trained YOLO detector (its ultralytics checkpoint as ``model.pt``) as a new store entry."""
    import ultralytics

    metadata = {
        **provenance(spec, cfg, ultralytics=ultralytics.__version__),
        "input_size": result.input_size,
        "arch": {"model_yaml": spec.model_yaml, "num_classes": spec.num_classes},
        "thresholds": {"conf": spec.conf, "iou": spec.iou, "max_det": spec.max_det},
        "pretrained": cfg.pretrained or "none (the model yaml's random weights)",
        "metrics": {"test": result.metrics, "held_out": result.data.source},
        "training": {
            "seconds": round(result.seconds, 1),
            "epochs_run": result.epochs_run,
            "split_sizes": result.data.sizes,
        },
        "dataset": {"fingerprint": result.data.fingerprint, "source": result.data.source},
    }
    kind = "synthetic" if cfg.synthetic else ("yolo" if result.data.source.startswith("yolo:") else "figshare")
    return write_entry(spec, cfg, metadata, {"model.pt": result.weights}, kind)


def save_speech(spec, result, cfg) -> str:
    """Write a fine-tuned Whisper as ``model.pt`` (openai-whisper checkpoint, float16 weights) in a new entry."""
    import dataclasses
    import tempfile

    import torch
    import whisper

    model = result.model
    metadata = {
        **provenance(spec, cfg, openai_whisper=whisper.__version__),
        "language": spec.language,
        "sample_rate": spec.sample_rate,
        "arch": dataclasses.asdict(model.dims),
        "metrics": {"test": result.metrics, "held_out": result.source},
        "training": {
            **fit_summary(result.fit),
            "train_size": result.train_size,
            "base": cfg.base or spec.base,
        },
        "dataset": {"source": result.source, "real_text": result.real_text},
    }
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"dims": dataclasses.asdict(model.dims), "model_state_dict": state}, path)
        kind = "synthetic" if cfg.synthetic else ("manifest" if Path(cfg.data).is_file() else "kspon")
        return write_entry(spec, cfg, metadata, {"model.pt": path}, kind)


def save_tagger(spec, result, cfg) -> str:
    """Write a fine-tuned token tagger (transformers ``save_pretrained`` files: weights, config, tokenizer) as a
    new store entry."""
    import tempfile

    import transformers

    metadata = {
        **provenance(spec, cfg, transformers=transformers.__version__),
        "max_length": spec.max_length,
        "stride": spec.stride,
        "arch": {"base": cfg.base or spec.base, "num_labels": spec.num_classes},
        # the encoder it started from: package, version, SHA-256; for e5 the 4-bit origin and the vocabulary kept
        "base": getattr(result, "base", None) or {"name": cfg.base or spec.base},
        "metrics": {"test": result.metrics, "held_out": result.source},
        "training": {
            **fit_summary(result.fit),
            "sizes": result.sizes,
        },
        "dataset": {"source": result.source},
    }
    with tempfile.TemporaryDirectory() as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        files = {p.name: p for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        return write_entry(spec, cfg, metadata, files, "synthetic" if cfg.synthetic else "jsonl")


def save_qa(spec, result, cfg) -> str:
    """Write a fine-tuned span model (the encoder's transformers files, its tokenizer and the span head) and its
    held-out EM / F1 (KorQuAD's and SQuAD's, on synthetic passages and on passages with real Korean filler) as a
    new store entry."""
    import tempfile

    import transformers

    from training.qa import save_folder

    metadata = {
        **provenance(spec, cfg, transformers=transformers.__version__),
        "max_length": spec.max_length,
        "stride": spec.stride,
        "max_question_tokens": spec.max_question_tokens,
        "max_answer_tokens": spec.max_answer_tokens,
        "arch": {"base": cfg.base or spec.base, "head": result.model.head},
        "base": result.base,
        "metrics": {"test": result.metrics, "held_out": result.source},
        "training": {**fit_summary(result.fit), "sizes": result.sizes},
        "dataset": {"source": result.source},
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_folder(result.model, result.tokenizer, tmp)
        files = {p.name: p for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        return write_entry(spec, cfg, metadata, files, "synthetic" if cfg.synthetic else "korquad")


def save_palette(spec, result, cfg) -> str:
    """Write the palette generator (``model.pt``: arguments that rebuild it and its weights) and the held-out
    comparison of every method with the peers as a new store entry."""
    import tempfile

    import torch

    from training.palette import checkpoint

    metadata = {
        **provenance(spec, cfg),
        "input_size": spec.input_size,
        "arch": {"sizes": list(result.model.sizes), "width": result.model.width},
        "metrics": {"test": result.metrics, "held_out": "scikit-image photos training never sees; synthetic"},
        "training": {**fit_summary(result.fit), "chroma_finetune": result.finetune, "sizes": result.sizes},
        "dataset": {"source": result.source},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(checkpoint(result.model, spec), path)
        return write_entry(spec, cfg, metadata, {"model.pt": path}, "synthetic")
