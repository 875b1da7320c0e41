"""ImageNet weights from packages (training/pretrained.py): each converts with every tensor in its place, and
behaves as an ImageNet model on real photos (scikit-image's)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from training import pretrained

# ImageNet class indices of what the photos show
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504
TABBY, TIGER_CAT, EGYPTIAN_CAT = 281, 282, 285
MISSILE, PROJECTILE, SPACE_SHUTTLE = 657, 744, 812


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained")
    return {name: pretrained.load(name, out) for name in pretrained.SOURCES}, out


def photo(name: str, size: int, mean, std) -> torch.Tensor:
    """A scikit-image photo as an ImageNet model takes it: shorter side to size / 0.875, centre crop, normalised."""
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    scale = size / 0.875 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    x = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255
    return torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())


def test_each_conversion_loads_strictly_and_says_where_it_came_from(converted):
    weights, out = converted
    for name, src in pretrained.SOURCES.items():
        model = pretrained.build_target(src.arch)
        missing, unexpected = model.load_state_dict(weights[name]["state_dict"], strict=True)
        assert not missing and not unexpected
        assert weights[name]["source"]["sha256"] == src.sha256 and weights[name]["source"]["package"] == src.package
        assert (out / f"{name}.json").is_file()


def test_efficientnet_lite0_answers_as_imagenet_expects(converted):
    weights, _ = converted
    src = pretrained.SOURCES["efficientnet_lite0"]
    model = pretrained.build_target(src.arch).eval()
    model.load_state_dict(weights["efficientnet_lite0"]["state_dict"])
    mean, std = np.array(src.mean, np.float32), np.array(src.std, np.float32)
    x = torch.stack([photo(n, 224, mean, std) for n in ("coffee", "chelsea", "rocket")])
    with torch.no_grad():
        top5 = model(x).topk(5).indices.tolist()
    for top, expected in zip(
        top5,
        ({ESPRESSO, CUP, COFFEE_MUG}, {TABBY, TIGER_CAT, EGYPTIAN_CAT}, {MISSILE, PROJECTILE, SPACE_SHUTTLE}),
        strict=True,
    ):
        assert top[0] in expected and len(expected & set(top)) >= 2, top5  # first, and not alone


def test_mobilenet_v2_features_separate_photos_better_than_random_ones(converted):
    """Nearest class centroid on crops of six photos: centroids from some crops, scored on others."""
    from skimage import data

    weights, _ = converted
    src = pretrained.SOURCES["mobilenet_v2"]
    mean, std = np.array(src.mean, np.float32), np.array(src.std, np.float32)
    names = ("astronaut", "coffee", "chelsea", "rocket", "coins", "hubble_deep_field")
    rng = np.random.default_rng(0)
    crops, labels = [], []
    for k, name in enumerate(names):
        img = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"), np.float32) / 255
        for _ in range(12):
            side = int(rng.integers(min(img.shape[:2]) // 3, min(img.shape[:2]) // 2))
            y, x = rng.integers(0, img.shape[0] - side), rng.integers(0, img.shape[1] - side)
            crop = Image.fromarray((img[y : y + side, x : x + side] * 255).astype(np.uint8)).resize((96, 96))
            crops.append(((np.asarray(crop, np.float32) / 255 - mean) / std).transpose(2, 0, 1))
            labels.append(k)
    x, y = torch.from_numpy(np.stack(crops)), np.array(labels)
    train = np.arange(len(y)) % 3 != 0

    def accuracy(state: dict | None) -> float:
        torch.manual_seed(0)
        features = pretrained.build_target(src.arch).eval()
        if state is not None:
            features.load_state_dict(state)
        with torch.no_grad():
            f = torch.nn.functional.normalize(features(x).mean((2, 3)), dim=1).numpy()
        centroids = np.stack([f[train & (y == k)].mean(0) for k in range(len(names))])
        return float(((f[~train] @ centroids.T).argmax(1) == y[~train]).mean())

    assert accuracy(weights["mobilenet_v2"]["state_dict"]) > accuracy(None) + 0.15


def test_a_file_that_is_not_the_one_recorded_is_refused(monkeypatch, tmp_path):
    src = pretrained.SOURCES["mobilenet_v2"]
    monkeypatch.setitem(pretrained.SOURCES, "mobilenet_v2", dataclasses.replace(src, sha256="0" * 64))
    with pytest.raises(pretrained.ConversionError, match="expected 000000000000"):
        pretrained.convert("mobilenet_v2", tmp_path)


def test_tensors_that_do_not_pair_up_are_refused():
    a = {"x.weight": torch.zeros(2, 3), "x.bias": torch.zeros(2)}
    with pytest.raises(pretrained.ConversionError, match="does not map onto"):
        pretrained.map_in_order(a, {"y.weight": torch.zeros(2, 3), "y.bias": torch.zeros(3)})
    with pytest.raises(pretrained.ConversionError, match="does not map onto"):
        pretrained.map_in_order(a, {"y.bias": torch.zeros(2, 3), "y.weight": torch.zeros(2)})
    with pytest.raises(pretrained.ConversionError, match="2 tensors in the file, 1 in the model"):
        pretrained.map_in_order(a, {"y.weight": torch.zeros(2, 3)})
