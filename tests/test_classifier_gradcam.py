"""Grad-CAM keeps no state on the shared model: many threads at once each get the heatmap of their own input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tasks.classifier import build_model, gradcam


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "mobilenet_v2"])
def test_concurrent_gradcam_calls_on_one_model_each_get_their_own_map(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, 3).eval().requires_grad_(False)
    xs = [torch.randn(1 + i % 3, 3, 64, 64) for i in range(16)]
    classes = [[(i + j) % 3 for j in range(len(x))] for i, x in enumerate(xs)]
    alone = [gradcam(model, x, c) for x, c in zip(xs, classes, strict=True)]
    assert sum(np.abs(alone[i][0] - alone[j][0]).max() > 0.2 for i in range(16) for j in range(i)) >= 40
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda a: gradcam(model, *a), zip(xs, classes, strict=True)))
    for a, t in zip(alone, together, strict=True):
        assert a.shape == t.shape and np.abs(a - t).max() < 1e-4
    assert all(p.grad is None for p in model.parameters())  # no weight gradients were computed
