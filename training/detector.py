"""Detection training for :class:`~tasks.spec.DetectorSpec` tasks with ultralytics YOLO (built from yaml).

Data (synthetic, figshare ``.mat`` files, or an ultralytics dataset with ``data.yaml``) -> a YOLO dataset split by
patient / volume -> ``YOLO(yaml).train`` -> mAP50, mAP50-95, precision / recall / AP50 per class on the test split.
Ultralytics runs fully offline (:func:`offline_ultralytics`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from tqdm.auto import tqdm

from tasks.spec import DetectorSpec, resolve
from training import progress
from training.config import TrainConfig

Target = tuple[int, float, float, float, float]  # class, x0, y0, x1, y1 in pixels


def offline_ultralytics(workdir: Path) -> None:
    """Keep ultralytics off the network: no downloads, no auto-install, fonts from matplotlib."""
    import matplotlib

    cfg = workdir / "ultralytics-config"
    fonts = cfg / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (fonts / name).exists():
            shutil.copy(font, fonts / name)
    os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false", YOLO_CONFIG_DIR=str(cfg))


def split_groups(groups: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign whole groups (patients / volumes) to splits so each split gets about its share of images."""
    counts: dict[str, int] = {}
    for g in groups:
        counts[g] = counts.get(g, 0) + 1
    order = sorted(counts)
    np.random.default_rng(seed).shuffle(order)
    total, assigned, out = len(groups), 0, {}
    names = list(fractions)
    bounds = np.cumsum([fractions[n] for n in names]) * total
    for g in order:
        split = next((n for n, b in zip(names, bounds, strict=True) if assigned < b), names[-1])
        out[g] = split
        assigned += counts[g]
    return out


def write_yolo(root: Path, split: str, images: list[np.ndarray], targets: list[list[Target]]) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, (img, boxes) in enumerate(zip(images, targets, strict=True)):
        h, w = img.shape[:2]
        Image.fromarray(img).save(root / "images" / split / f"{i:06d}.png")
        lines = [
            f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
            for c, x0, y0, x1, y1 in boxes
        ]
        (root / "labels" / split / f"{i:06d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))


def write_data_yaml(root: Path, labels: tuple[str, ...], splits: list[str]) -> Path:
    doc = {"path": str(root), **{s: f"images/{s}" for s in splits}, "names": dict(enumerate(labels))}
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class DetectionData:
    data_yaml: Path
    test_split: str
    fingerprint: str
    source: str
    sizes: dict[str, int]


def prepare_data(spec: DetectorSpec, cfg: TrainConfig, workdir: Path) -> DetectionData:
    """A YOLO dataset on disk with train / val / test splits by group."""
    root = workdir / "dataset"
    if cfg.data and (Path(cfg.data) / "data.yaml").is_file():
        return _existing_yolo(spec, Path(cfg.data))
    if cfg.synthetic > 0:
        generate = resolve(spec.synthetic)
        images, targets, groups = generate(cfg.synthetic, seed=cfg.seed)
        n_test = cfg.test_size or max(30, cfg.synthetic // 5)
        test_images, test_targets, _ = generate(n_test, seed=cfg.test_seed)
        source = (
            f"synthetic:{spec.synthetic}(n={cfg.synthetic}, seed={cfg.seed}; test n={n_test}, "
            f"seed={cfg.test_seed}; split by patient)"
        )
        assign = split_groups(groups, {"val": cfg.val_fraction, "train": 1 - cfg.val_fraction}, cfg.seed)
        write_yolo(root, "test", test_images, test_targets)
        digest = hashlib.sha256(b"".join(im.tobytes() for im in images + test_images) + repr(targets).encode())
    else:
        from training.datasets import figshare

        paths = figshare.list_mat_files(cfg.data)
        if not paths:
            raise FileNotFoundError(f"{cfg.data}: no figshare .mat files and no data.yaml")
        images, targets, groups = [], [], []
        for p in tqdm(paths, desc=f"read {cfg.data}", unit="slice"):
            img, cls, pid, box = figshare.read_mat(p)
            images.append(img)
            targets.append([(cls, *box)])
            groups.append(pid)
        held = cfg.val_fraction + cfg.test_fraction
        fractions = {"test": cfg.test_fraction, "val": cfg.val_fraction, "train": 1 - held}
        assign = split_groups(groups, fractions, cfg.seed)
        source = f"figshare:{cfg.data} ({len(paths)} slices, {len(set(groups))} patients; split by patient)"
        digest = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}" for p in paths).encode())
    sizes = {}
    for split in sorted(set(assign.values())):
        idx = [i for i, g in enumerate(groups) if assign[g] == split]
        write_yolo(root, split, [images[i] for i in idx], [targets[i] for i in idx])
        print(f"wrote {len(idx)} {split} images to {root / 'images' / split}")
        sizes[split] = len(idx)
    if cfg.synthetic > 0:
        sizes["test"] = len(test_images)
    splits = [s for s in ("train", "val", "test") if (root / "images" / s).is_dir()]
    return DetectionData(write_data_yaml(root, spec.labels, splits), "test", digest.hexdigest(), source, sizes)


def _existing_yolo(spec: DetectorSpec, root: Path) -> DetectionData:
    doc = yaml.safe_load((root / "data.yaml").read_text())
    names = doc.get("names")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    if tuple(names) != spec.labels:
        raise ValueError(f"{root}/data.yaml names {names} differ from the task's labels {list(spec.labels)}")
    for split in ("train", "val"):
        if split not in doc:
            raise ValueError(f"{root}/data.yaml has no {split!r} split")
    base = Path(doc.get("path") or root)
    base = base if base.is_absolute() else root / base
    fixed = {**doc, "path": str(base)}
    out = root / "data.resolved.yaml"
    out.write_text(yaml.safe_dump(fixed, sort_keys=False))
    test_split = "test" if "test" in doc else "val"
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".txt"))
    digest = hashlib.sha256("".join(f"{p.relative_to(base)}:{p.stat().st_size}" for p in files).encode())
    return DetectionData(out, test_split, digest.hexdigest(), f"yolo:{root}", {})


@dataclass
class DetectorResult:
    weights: Path
    metrics: dict
    data: DetectionData
    input_size: int
    workdir: Path
    seconds: float
    epochs_run: int

    def cleanup(self) -> None:
        """Remove the working copy of the dataset and the ultralytics run (the store entry keeps the model)."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def evaluate(weights: Path, data: DetectionData, spec: DetectorSpec, size: int, device: str) -> dict:
    """mAP50, mAP50-95 and per-class precision / recall / AP50 on the test split."""
    from ultralytics import YOLO

    m = YOLO(str(weights)).val(
        data=str(data.data_yaml),
        split=data.test_split,
        imgsz=size,
        batch=16,
        device=device,
        plots=False,
        verbose=False,
        workers=0,
    )
    box = m.box
    per_class = {}
    for i, label in enumerate(spec.labels):
        if i in list(box.ap_class_index):
            j = list(box.ap_class_index).index(i)
            per_class[label] = {"precision": float(box.p[j]), "recall": float(box.r[j]), "ap50": float(box.ap50[j])}
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
        "per_class": per_class,
        "split": data.test_split,
    }


def healthy_false_boxes(weights: Path, spec: DetectorSpec, size: int, device: str) -> dict:
    """Boxes the model draws at its default threshold on real slices with nothing planted (nibabel's and
    pydicom's brain images, every slice): each is a false positive."""
    from ultralytics import YOLO

    from tasks.medical import window_to_uint8
    from training.datasets.mri import base_volumes

    slices = [window_to_uint8(v[:, :, z]) for v in base_volumes().values() for z in range(v.shape[2])]
    model = YOLO(str(weights))
    boxes = sum(
        len(r.boxes)
        for r in model.predict(
            [np.repeat(s[..., None], 3, 2) for s in slices],
            imgsz=size,
            conf=spec.conf,
            iou=spec.iou,
            device=device,
            verbose=False,
        )
    )
    return {
        "slices": len(slices),
        "false_boxes": int(boxes),
        "per_10_slices": round(10 * boxes / len(slices), 3),
        "conf": spec.conf,
    }


def train(spec: DetectorSpec, cfg: TrainConfig) -> DetectorResult:
    import time

    if cfg.freeze != "none":
        raise ValueError("--freeze applies to image classifiers; YOLO detection trains every layer")
    workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-train-"))
    offline_ultralytics(workdir)
    from ultralytics import YOLO

    size = cfg.input_size or spec.input_size
    device = "cpu" if cfg.device == "cpu" else ("0" if cfg.device == "cuda" else None)
    if device is None:
        import torch

        device = "0" if torch.cuda.is_available() else "cpu"
    data = prepare_data(spec, cfg, workdir)
    model = YOLO(spec.model_yaml)
    if cfg.pretrained == "imagenet":
        raise ValueError("no pretrained YOLO weights ship as packages: give an ultralytics file (--pretrained FILE)")
    if cfg.pretrained:
        model = model.load(cfg.pretrained)
    model.add_callback("on_fit_epoch_end", lambda trainer: progress.epoch_done(trainer.epoch + 1, trainer.epochs))
    start = time.perf_counter()
    model.train(
        data=str(data.data_yaml),
        epochs=cfg.epochs,
        imgsz=size,
        batch=cfg.batch_size,
        device=device,
        workers=0,
        project=str(workdir / "runs"),
        name="train",
        exist_ok=True,
        seed=cfg.seed,
        deterministic=True,
        patience=cfg.patience,
        optimizer="AdamW",
        lr0=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_epochs=max(0.0, cfg.warmup_fraction * cfg.epochs),
        plots=False,
        amp=False,
        verbose=False,
        pretrained=bool(cfg.pretrained),
        val=True,
    )
    seconds = time.perf_counter() - start
    weights = workdir / "runs" / "train" / "weights" / "best.pt"
    trainer = model.trainer
    metrics = evaluate(weights, data, spec, size, device)
    metrics["healthy_real"] = healthy_false_boxes(weights, spec, size, device)
    return DetectorResult(weights, metrics, data, size, workdir, seconds, int(getattr(trainer, "epoch", 0)) + 1)
