"""Training configuration: a frozen dataclass; YAML files and CLI flags only override its fields.

An unknown key or a value of the wrong type is an error, never silently corrected.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFESTS = (".csv", ".jsonl", ".json")


@dataclass(frozen=True)
class TrainConfig:
    task: str
    data: str | None = None  # class-per-folder tree (NIH layout), KsponSpeech folder or speech manifest
    synthetic: int = 0  # number of generated training + validation images
    test_size: int = 0  # generated held-out images (0: 20 % of `synthetic`), from `test_seed`
    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.15
    freeze: str = "none"  # none | half | head (classifiers); none | encoder (speech)
    pretrained: str | None = None  # classifiers: imagenet (the packaged weights), a weight file, or none (random)
    random_baseline: bool = False  # classifiers: also train from random weights, same data and budget; record both
    patience: int = 3  # early stopping on validation loss
    val_fraction: float = 0.15
    test_fraction: float = 0.15  # real data: stratified share held out for the test metrics
    seed: int = 0
    test_seed: int = 1_000_003  # synthetic test set comes from a different seed than training
    input_size: int | None = None  # None: the task's declared size
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads (0: torch's default)
    limit_batches: int = 0  # >0: stop each epoch after this many batches (smoke tests)
    name: str | None = None  # model-store name (default: the task name)
    base: str | None = None  # speech: Whisper base (checkpoint file or name; default: the task's)
    augment: bool = True  # speech: SpecAugment-style masks (when the encoder trains)
    accumulate: int = 1  # batches per optimiser step
    finetune_epochs: int = 0  # palette: chroma fine-tuning (reinforcement learning) after the adversarial fit
    real_text: int = 0  # speech: real Korean sentences (training documents only) spoken and mixed into training
    terms: str | None = None  # speech: a file of domain terms, one per line: train on sentences holding them (Set A)
    head: str | None = None  # qa: linear | gru | lstm over the encoder (default: the task's)
    no_answer: float = 0.0  # qa: share of training questions without an answer (no-answer augmentation; 0: none)


def _coerce(name: str, value: Any) -> Any:
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if not optional:
            raise ValueError(f"{name} may not be empty")
        return None
    if base is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if base is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{name}: expected a whole number, got {value!r}")
    try:
        return base(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected {base.__name__}, got {value!r}") from e


def override(config: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with ``values`` applied; unknown keys and bad types raise ``ValueError``."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(fields)}")
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return dataclasses.replace(config, **coerced)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    return data


def validate(config: TrainConfig) -> None:
    """Reject configurations that cannot train, with a message naming the fix."""
    if (config.data is None) == (config.synthetic <= 0):
        raise ValueError("give exactly one data source: --data DIR or --synthetic N")
    if config.data is not None and not Path(config.data).exists():
        raise ValueError(f"data folder not found: {config.data} (speech also reads a .csv / .jsonl manifest)")
    if config.data is not None and Path(config.data).is_file() and Path(config.data).suffix not in MANIFESTS:
        raise ValueError(f"{config.data}: a data file must be a speech manifest ({', '.join(MANIFESTS)})")
    if config.freeze not in ("none", "half", "head", "encoder"):
        raise ValueError(f"freeze: expected none, half, head (classifiers) or encoder (speech), got {config.freeze!r}")
    if config.accumulate < 1:
        raise ValueError("accumulate must be at least 1")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected auto, cpu or cuda, got {config.device!r}")
    if not 0 < config.val_fraction < 0.5 or not 0 <= config.test_fraction < 0.5:
        raise ValueError("val_fraction must be in (0, 0.5) and test_fraction in [0, 0.5)")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    if config.head not in (None, "linear", "gru", "lstm"):
        raise ValueError(f"head: expected linear, gru or lstm, got {config.head!r}")
    if not 0 <= config.no_answer < 1:
        raise ValueError("no_answer must be in [0, 1)")
    if config.real_text < 0:
        raise ValueError("real_text must be 0 or more")
    if config.terms is not None and not Path(config.terms).is_file():
        raise ValueError(f"terms: file not found: {config.terms}")
    if config.pretrained not in (None, "imagenet") and not Path(config.pretrained).is_file():
        raise ValueError(f"pretrained: expected imagenet, none or a weight file; not found: {config.pretrained}")
