"""Image classification training for any :class:`~tasks.spec.ImageClassifierSpec` task.

Data (synthetic or class-per-folder) -> stratified split -> the shared fit loop -> held-out metrics, on the usual
held-out split and on the same images shifted outside training's ranges (training/datasets/shift.py). Training
starts from the packaged ImageNet weights of the backbone (``--pretrained imagenet``, training/pretrained.py), a
weight file, or random weights (``--pretrained none``); ``--random-baseline true`` also trains the same network
from random weights on the same data and budget and records it beside.
Images are resized once with the serving transform (:func:`tasks.images.resize`) and kept as uint8 in memory;
augmentation (flips, right-angle turns, brightness / contrast) runs on those, then :func:`tasks.images.normalize`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from tasks import classifier as arch
from tasks.images import normalize, resize, to_rgb
from tasks.spec import ImageClassifierSpec, resolve
from training.config import TrainConfig
from training.datasets import folder
from training.datasets.shift import shifted
from training.fit import FitResult, fit, pick_device, schedule
from training.metrics import classification_metrics


@dataclass
class Split:
    x: np.ndarray  # (N, S, S, 3) uint8, already resized to the input size
    y: np.ndarray  # (N,) int64


@dataclass
class Data:
    train: Split
    val: Split
    test: Split
    fingerprint: str
    source: str


def _stack(images: list[np.ndarray], size: int, desc: str) -> np.ndarray:
    return np.stack([resize(to_rgb(Image.fromarray(im)), size) for im in tqdm(images, desc=desc, unit="img")])


def load_data(spec: ImageClassifierSpec, cfg: TrainConfig, size: int) -> Data:
    """Build train / validation / test splits (stratified, fixed seed; synthetic test from ``test_seed``)."""
    if cfg.synthetic > 0:
        generate = resolve(spec.synthetic)
        images, labels = generate(cfg.synthetic, seed=cfg.seed)
        x = _stack(images, size, "resize train+val")
        y = np.asarray(labels, np.int64)
        n_test = cfg.test_size or max(len(spec.labels) * 2, cfg.synthetic // 5)
        test_images, test_labels = generate(n_test, seed=cfg.test_seed)
        test = Split(_stack(test_images, size, "resize test"), np.asarray(test_labels, np.int64))
        digest = hashlib.sha256(x.tobytes() + y.tobytes() + test.x.tobytes() + test.y.tobytes())
        source = (
            f"synthetic:{spec.synthetic}(n={cfg.synthetic}, seed={cfg.seed}; test n={n_test}, seed={cfg.test_seed})"
        )
        tr_x, va_x, tr_y, va_y = train_test_split(x, y, test_size=cfg.val_fraction, stratify=y, random_state=cfg.seed)
        return Data(Split(tr_x, tr_y), Split(va_x, va_y), test, digest.hexdigest(), source)

    paths, targets = folder.list_images(cfg.data, spec.labels)
    loaded = []
    for p in tqdm(paths, desc=f"load {cfg.data}", unit="img"):
        with Image.open(p) as im:
            loaded.append(resize(to_rgb(im), size))
    x, y = np.stack(loaded), np.asarray(targets, np.int64)
    held = cfg.val_fraction + cfg.test_fraction
    tr_x, rest_x, tr_y, rest_y = train_test_split(x, y, test_size=held, stratify=y, random_state=cfg.seed)
    va_x, te_x, va_y, te_y = train_test_split(
        rest_x, rest_y, test_size=cfg.test_fraction / held, stratify=rest_y, random_state=cfg.seed
    )
    return Data(
        Split(tr_x, tr_y),
        Split(va_x, va_y),
        Split(te_x, te_y),
        folder.fingerprint(paths, targets),
        f"folder:{cfg.data} ({len(paths)} images)",
    )


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random flips, right-angle turns and brightness / contrast jitter of (N, S, S, 3) uint8 squares."""
    out = np.empty_like(batch)
    for i, im in enumerate(batch):
        im = np.rot90(im, int(rng.integers(4)))
        if rng.random() < 0.5:
            im = im[:, ::-1]
        out[i] = im
    gain = rng.uniform(0.85, 1.15, (len(batch), 1, 1, 1))
    bias = rng.uniform(-15, 15, (len(batch), 1, 1, 1))
    return np.clip(out * gain + bias, 0, 255).astype(np.uint8)


def _batches(split: Split, spec: ImageClassifierSpec, batch_size: int, rng: np.random.Generator | None, limit: int = 0):
    def gen():
        order = rng.permutation(len(split.y)) if rng is not None else np.arange(len(split.y))
        for n, start in enumerate(range(0, len(order), batch_size)):
            if limit and n >= limit:
                return
            idx = order[start : start + batch_size]
            x = split.x[idx]
            if rng is not None:
                x = augment(x, rng)
            yield torch.from_numpy(normalize(x, spec.mean, spec.std)), torch.from_numpy(split.y[idx])

    return gen


def predict_proba(
    model: torch.nn.Module,
    x: np.ndarray,
    spec: ImageClassifierSpec,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, C) float32 probabilities."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(normalize(x[start : start + batch_size], spec.mean, spec.std)).to(device)
            out.append(torch.softmax(model(xb), 1).float().cpu().numpy())
    return np.concatenate(out)


@dataclass
class TrainResult:
    model: torch.nn.Module
    fit: FitResult
    metrics: dict  # on the usual held-out split
    shifted_metrics: dict  # on the same images shifted outside training's ranges
    data: Data
    input_size: int
    frozen_blocks: int
    pretrained: dict | None  # where the starting weights came from (None: random)
    baseline: TrainResult | None = None  # the random-init twin (--random-baseline)

    def cleanup(self) -> None:
        """Nothing on disk to remove: classifier data stays in memory."""


def initial_weights(model: torch.nn.Module, spec: ImageClassifierSpec, cfg: TrainConfig) -> dict | None:
    """Load the configured starting weights into ``model``'s backbone; returns what the store entry records of
    them (None for random weights)."""
    if cfg.pretrained is None:
        return None
    if cfg.pretrained == "imagenet":
        from training.pretrained import imagenet

        state, source = imagenet(spec.backbone)
        if (tuple(source["mean"]), tuple(source["std"])) != (tuple(spec.mean), tuple(spec.std)):
            raise ValueError(
                f"{spec.name} normalises with mean {spec.mean} / std {spec.std}, but the {spec.backbone} ImageNet "
                f"weights expect mean {tuple(source['mean'])} / std {tuple(source['std'])}: set them in its spec"
            )
    else:
        from tasks.store import sha256_file

        state, source = cfg.pretrained, {"file": cfg.pretrained, "sha256": sha256_file(cfg.pretrained)}
    arch.load_pretrained(model, state)
    return source


def train(spec: ImageClassifierSpec, cfg: TrainConfig, data: Data | None = None) -> TrainResult:
    """Fit ``spec``'s backbone on the configured data and measure it on the held-out test split, as it is and
    shifted (``data``: splits already loaded, for the random-init twin)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    size = cfg.input_size or spec.input_size
    data = data or load_data(spec, cfg, size)
    model = arch.build_model(spec.backbone, spec.num_classes)
    source = initial_weights(model, spec, cfg)
    frozen = arch.freeze(model, cfg.freeze)
    frozen_blocks = arch.feature_blocks(model)[:frozen]
    model.to(device)

    def set_train_mode(m: torch.nn.Module) -> None:
        m.train()
        for block in frozen_blocks:
            block.eval()

    rng = np.random.default_rng(cfg.seed)
    steps = -(-len(data.train.y) // cfg.batch_size)
    if cfg.limit_batches:
        steps = min(steps, cfg.limit_batches)
    result = fit(
        model,
        _batches(data.train, spec, cfg.batch_size, rng, cfg.limit_batches),
        _batches(data.val, spec, 128, None),
        steps_per_epoch=steps,
        device=device,
        set_train_mode=set_train_mode,
        desc=spec.name,
        **schedule(cfg),
    )
    probs = predict_proba(model, data.test.x, spec, device)
    metrics = classification_metrics(data.test.y, probs, spec.labels, spec.positive_label)
    shifted_probs = predict_proba(model, shifted(data.test.x, spec.shifts, cfg.test_seed + 1), spec, device)
    shifted_metrics = classification_metrics(data.test.y, shifted_probs, spec.labels, spec.positive_label)
    out = TrainResult(model.cpu().eval(), result, metrics, shifted_metrics, data, size, frozen, source)
    if cfg.random_baseline and cfg.pretrained is not None:
        out.baseline = train(spec, replace(cfg, pretrained=None, random_baseline=False), data)
    return out
