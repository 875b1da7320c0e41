"""Model construction for image classification tasks (torchvision and timm backbones) and Grad-CAM.

One function builds any supported backbone with the task's number of classes, so training, export and serving
rebuild the same network from the arguments a checkpoint carries. ``efficientnet_lite0`` is timm's
``tf_efficientnet_lite0``, the network whose ImageNet weights ship in a package (training/pretrained.py); the
others are torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from tasks.spec import ImageClassifierSpec

TIMM_BACKBONES = {"efficientnet_lite0": "tf_efficientnet_lite0"}
BACKBONES = ("efficientnet_lite0", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large", "resnet50", "densenet121")
FREEZE_STRATEGIES = ("none", "half", "head")


def build_model(backbone: str, num_classes: int) -> nn.Module:
    """A torchvision or timm backbone with a fresh ``num_classes`` head. Weights are random."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if backbone in TIMM_BACKBONES:
        import timm

        model = timm.create_model(TIMM_BACKBONES[backbone], pretrained=False, num_classes=num_classes)
    else:
        model = getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes)
    # torchvision scales the head's init by 1/sqrt(num_classes): right for 1000 classes, but with two it starts
    # with logits of magnitude ~7 and a loss of ~2. Start the head near zero instead.
    last = [m for m in head(model).modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(last.weight, std=0.01)
    nn.init.zeros_(last.bias)
    return model


def head(model: nn.Module) -> nn.Module:
    """The classification head (the part replaced for a new task)."""
    return model.fc if hasattr(model, "fc") else model.classifier


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_features") and hasattr(model, "conv_stem")


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone's feature stages in input-to-output order (what freezing strategies count)."""
    if _is_timm(model):  # stem, the seven stages, the 1x1 head convolution: as torchvision's EfficientNet counts
        return [nn.ModuleList([model.conv_stem, model.bn1]), *model.blocks, nn.ModuleList([model.conv_head, model.bn2])]
    if hasattr(model, "features"):  # efficientnet, mobilenet, densenet
        return list(model.features.children())
    return [model.conv1, model.bn1, model.layer1, model.layer2, model.layer3, model.layer4]  # resnet


def load_pretrained(model: nn.Module, weights: str | Path | dict) -> list[str]:
    """Load ImageNet weights (a standard torchvision / timm weight file, or its ``state_dict``) into the backbone;
    the head stays fresh.

    Returns the names of parameters that were not loaded (the head). Fails if the weights do not fit.
    """
    state = weights if isinstance(weights, dict) else torch.load(weights, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    path = "the weights" if isinstance(weights, dict) else weights
    head_names = {f"{n}" for n, _ in model.named_parameters() if _is_head(model, n)}
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and k not in head_names and own[k].shape == v.shape}
    missing_backbone = [k for k in own if k not in kept and k not in head_names and "num_batches" not in k]
    if missing_backbone:
        raise ValueError(
            f"{path} does not fit this backbone: {len(missing_backbone)} tensors missing or misshapen, "
            f"e.g. {missing_backbone[:3]}"
        )
    model.load_state_dict(kept, strict=False)
    return sorted(head_names)


def _is_head(model: nn.Module, param_name: str) -> bool:
    prefix = "fc." if hasattr(model, "fc") else "classifier."
    return param_name.startswith(prefix)


def freeze(model: nn.Module, strategy: str) -> int:
    """Apply a layer-freezing strategy from the seed study; returns the number of frozen feature blocks.

    - ``none``: train everything;
    - ``half``: freeze the first half of the feature blocks;
    - ``head``: freeze every feature block, train the head only.
    """
    if strategy not in FREEZE_STRATEGIES:
        raise ValueError(f"unknown freezing strategy {strategy!r}; choose one of {FREEZE_STRATEGIES}")
    blocks = feature_blocks(model)
    n = {"none": 0, "half": len(blocks) // 2, "head": len(blocks)}[strategy]
    for block in blocks[:n]:
        for p in block.parameters():
            p.requires_grad_(False)
        block.eval()  # frozen BatchNorm keeps its statistics (re-applied after each .train())
    return n


def checkpoint(model: nn.Module, spec: ImageClassifierSpec) -> dict:
    """What a store entry's ``model.pt`` holds: the arguments that rebuild the model, and its weights."""
    return {
        "arch": {"backbone": spec.backbone, "num_classes": spec.num_classes},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def from_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild a model from ``model.pt`` (see :func:`checkpoint`), in eval mode on the CPU."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(**ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().requires_grad_(False)


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature block's output (N, C, h, w): what Grad-CAM weighs."""
    if _is_timm(model):
        return model.forward_features(x)
    if hasattr(model, "features"):  # efficientnet, mobilenet, densenet
        return model.features(x)
    for layer in (model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3):
        x = layer(x)
    return model.layer4(x)  # resnet


def head_logits(model: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    """The rest of the network after :func:`feature_map`: (N, C, h, w) -> (N, classes) logits."""
    if _is_timm(model):
        return model.forward_head(fmap)
    if isinstance(model, torchvision.models.DenseNet):
        fmap = nn.functional.relu(fmap)
    pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1)
    return head(model)(pooled)


def gradcam(model: nn.Module, x: torch.Tensor, class_index: Sequence[int]) -> np.ndarray:
    """Grad-CAM on the last feature block, with no state on the model (no hooks, no retained gradients), so any
    number of threads may call it on one shared model at once. Parameters need no gradients (freeze them).

    x: (N, 3, H, W) preprocessed input; class_index: N target classes.
    Returns (N, H, W) float32 heatmaps in [0, 1] (each normalised by its own maximum).
    """
    with torch.no_grad():
        fmap = feature_map(model, x)
    with torch.enable_grad():
        fmap = fmap.detach().requires_grad_(True)  # a leaf of this call's own graph
        logits = head_logits(model, fmap)
        idx = torch.as_tensor(list(class_index), device=logits.device)
        (grad,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), fmap)
    with torch.no_grad():
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        cam = torch.relu((weights * fmap).sum(dim=1, keepdim=True))  # (N, 1, h, w)
        cam = nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).amax(dim=1).clamp_min(1e-30)[:, None, None]  # weak models give tiny maps
    return cam.cpu().numpy().astype(np.float32)


def heatmap_rgb(cam: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8, a blue-to-red ramp (no matplotlib needed)."""
    c = np.clip(cam, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * c - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * c - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * c - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)
