"""Every classifier backbone, torchvision's and timm's alike: freezing strategies, Grad-CAM and ONNX parity work
the same way (the service and exporters rebuild any of them from a checkpoint's arguments)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.onnx import export_onnx, validate_onnx
from tasks import get_task
from tasks.classifier import BACKBONES, build_model, feature_blocks, freeze, gradcam, head

SPEC = get_task("malaria")


def informative(backbone: str) -> torch.nn.Module:
    """A random network whose head matters (probabilities away from 1 / C), in eval mode."""
    torch.manual_seed(0)
    model = build_model(backbone, 3)
    last = [m for m in head(model).modules() if isinstance(m, torch.nn.Linear)][-1]
    torch.nn.init.normal_(last.weight, std=0.5)
    return model.eval().requires_grad_(False)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_freezing_strategies_freeze_leading_blocks_only(backbone):
    counts = {}
    for strategy in ("none", "half", "head"):
        model = build_model(backbone, 3)
        counts[strategy] = freeze(model, strategy)
        blocks = feature_blocks(model)
        trainable = [any(p.requires_grad for p in b.parameters()) for b in blocks]
        weighted = [bool(list(b.parameters())) for b in blocks]  # densenet's pooling and ReLU stages have none
        expected = [False] * counts[strategy] + [True] * (len(blocks) - counts[strategy])
        assert [t for t, w in zip(trainable, weighted, strict=True) if w] == [
            e for e, w in zip(expected, weighted, strict=True) if w
        ]
        assert all(p.requires_grad for p in head(model).parameters())
        in_blocks = {id(p) for b in blocks for p in b.parameters()} | {id(p) for p in head(model).parameters()}
        assert in_blocks == {id(p) for p in model.parameters()}  # the blocks and the head cover the network
    assert counts["none"] == 0 < counts["half"] < counts["head"] == len(feature_blocks(build_model(backbone, 3)))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradcam_follows_the_target_class(backbone):
    model = informative(backbone)
    x = torch.randn(2, 3, 64, 64)
    cams = gradcam(model, x, [0, 1])
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all() and cams.max() <= 1.0 + 1e-6
    other = gradcam(model, x, [2, 2])
    assert np.abs(cams - other).max() > 0.05  # another class, another map
    with torch.inference_mode():  # feature_map + head_logits is the network's own forward pass
        from tasks.classifier import feature_map, head_logits

        assert torch.allclose(head_logits(model, feature_map(model, x)), model(x), atol=1e-4)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_onnx_export_matches_pytorch(backbone, tmp_path):
    model = informative(backbone)
    spec = SPEC.__class__(**{**SPEC.__dict__, "labels": ("a", "b", "c"), "backbone": backbone})
    meta = {"input_size": 64, "normalization": {"mean": list(spec.mean), "std": list(spec.std)}}
    export_onnx(model, spec, meta, f"{backbone}:test", tmp_path / "model.onnx")
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    report = validate_onnx(model, tmp_path / "model.onnx", x, 1e-4)
    assert report["max_abs_diff"] <= 1e-4 and report["label_disagreements"] == 0


def test_every_imagenet_start_normalises_as_its_weights_expect():
    """A task that starts from packaged ImageNet weights feeds them the normalisation they were trained with (the
    trainer refuses a mismatch; the store entry carries it to the exporter and the service)."""
    from tasks import TASKS
    from training.pretrained import BACKBONE_SOURCES, SOURCES

    starts = {n: s for n, s in TASKS.items() if getattr(s, "train_defaults", {}).get("pretrained") == "imagenet"}
    assert {"malaria", "histopathology", "thermal"} <= set(starts)
    for spec in starts.values():
        src = SOURCES[BACKBONE_SOURCES[spec.backbone][0]]
        assert (spec.mean, spec.std) == (src.mean, src.std), spec.name
