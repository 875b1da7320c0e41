"""Palette task: colour maths, the methods, the generator's training and export (a tiny store built by the CLIs)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks import palette as P
from tasks.images import decode_image
from tests.conftest import entry_metadata, png_bytes
from training.datasets import swatches

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula": test pairs and their published differences.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.694), (23.0331, 14.973, -42.5619), 2.0373),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_published_pairs():
    a = np.array([p[0] for p in SHARMA])
    b = np.array([p[1] for p in SHARMA])
    expected = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(P.ciede2000(a, b), expected, atol=1e-4)
    np.testing.assert_allclose(P.ciede2000(b, a), expected, atol=1e-4)  # symmetric


def test_colour_conversions_agree_with_scikit_image():
    from skimage.color import deltaE_ciede2000, rgb2lab

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2000, 3)).astype(np.uint8)
    lab = P.srgb_to_lab(rgb)
    np.testing.assert_allclose(lab, rgb2lab(rgb[None])[0], atol=0.01)
    np.testing.assert_array_equal(P.lab_to_srgb(lab), rgb)  # 8-bit round trip is exact
    np.testing.assert_allclose(P.srgb_to_lab(rgb.astype(np.float64) / 255), lab, atol=1e-9)
    np.testing.assert_allclose(P.ciede2000(lab[:1000], lab[1000:]), deltaE_ciede2000(lab[:1000], lab[1000:]), atol=1e-8)
    np.testing.assert_allclose(P.din99o_to_lab(P.lab_to_din99o(lab)), lab, atol=1e-8)
    np.testing.assert_allclose(
        P.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0]], np.uint8)), [[100, 0, 0], [0, 0, 0]], atol=0.01
    )


def test_din99o_distance_tracks_ciede2000():
    """Why k-medians runs in DIN99o: its Euclidean distance ranks colour pairs much as CIEDE2000 does."""
    rng = np.random.default_rng(1)
    a = P.srgb_to_lab(rng.integers(0, 256, (3000, 3)).astype(np.uint8))
    b = P.srgb_to_lab(np.clip(P.lab_to_srgb(a).astype(int) + rng.integers(-30, 31, (3000, 3)), 0, 255).astype(np.uint8))
    de = P.ciede2000(a, b)
    d99 = np.linalg.norm(P.lab_to_din99o(a) - P.lab_to_din99o(b), axis=1)
    d76 = np.linalg.norm(a - b, axis=1)
    assert np.corrcoef(de, d99)[0, 1] > 0.9
    assert np.corrcoef(de, d99)[0, 1] > np.corrcoef(de, d76)[0, 1]


@pytest.mark.parametrize("method", ["kmeans", "kmedians"])
def test_methods_find_planted_colours_deterministically(method):
    images, planted = swatches.generate(12, seed=777)
    errors = []
    for img, colours in zip(images, planted, strict=True):
        px = P.image_pixels(P.thumbnail(Image.fromarray(img), P.PALETTE.thumbnail))
        first = P.extract(px, len(colours), method)
        np.testing.assert_array_equal(first, P.extract(px, len(colours), method))  # same input, same palette
        lab = P.finish(first, px).lab
        errors.append(P.distances(P.srgb_to_lab(colours), lab).min(1).mean())
    # lighting and noise move pixels a few units from the planted colours; a missed colour costs 15 or more
    assert np.median(errors) < 5, errors


def test_fewer_distinct_colours_than_asked():
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = (200, 30, 30)
    px = P.image_pixels(img)
    for method in ("kmeans", "kmedians"):
        pal = P.finish(P.extract(px, 6, method), px)
        assert sorted(map(tuple, pal.rgb.tolist())) == [(0, 0, 0), (200, 30, 30)]
        np.testing.assert_allclose(pal.share, [0.5, 0.5], atol=0.05)


def test_small_images_keep_every_colour():
    """A small image is sampled whole, in random order: the seedings, which look at a prefix, see all of it."""
    img = np.full((60, 60, 3), 255, np.uint8)
    img[30:, :20], img[30:, 20:40], img[30:, 40:] = (200, 20, 20), (20, 160, 20), (20, 20, 200)
    px = P.image_pixels(img)
    for method in ("kmeans", "kmedians"):
        assert len(P.finish(P.extract(px, 4, method), px).rgb) == 4, method


def test_kmedians_lowers_the_error_on_a_held_out_photo():
    from training.palette import eval_pixels

    img = swatches.photo("astronaut.png")
    px = P.image_pixels(P.thumbnail(img, P.PALETTE.thumbnail))
    scored = eval_pixels(img)
    km = P.reconstruction_error(scored, P.finish(P.extract(px, 5, "kmeans"), px).lab)
    kmed = P.reconstruction_error(scored, P.finish(P.extract(px, 5, "kmedians"), px).lab)
    assert kmed < 0.97 * km, (kmed, km)


def test_finish_and_swatch():
    rng = np.random.default_rng(2)
    img = np.concatenate(
        [np.full((30, 60, 3), c, np.uint8) for c in ((10, 120, 200), (240, 240, 240), (90, 20, 20))], 0
    )
    img[:10] = (90, 20, 20)  # rows: the third colour 40 of 90, the second 30, the first 20
    px = P.image_pixels(img + rng.integers(0, 2, img.shape).astype(np.uint8))
    pal = P.finish(P.extract(px, 3, "kmedians"), px)
    assert pal.share.sum() == pytest.approx(1)
    assert list(pal.share) == sorted(pal.share, reverse=True)
    np.testing.assert_allclose(pal.share, [40 / 90, 30 / 90, 20 / 90], atol=0.03)
    assert pal.rgb[0].tolist() == [90, 20, 20] or P.ciede2000(pal.lab[0], P.srgb_to_lab(np.uint8([90, 20, 20]))) < 2
    np.testing.assert_allclose(pal.lab, P.srgb_to_lab(pal.rgb))
    assert P.hex_code(np.array([10, 120, 200])) == "#0a78c8"
    swatch = Image.open(io.BytesIO(P.swatch_png(pal)))
    assert swatch.size[1] == 80 and abs(swatch.size[0] - 400) <= 3
    row = np.asarray(swatch.convert("RGB"))[40]
    for rgb, share in zip(pal.rgb, pal.share, strict=True):
        width = (row == rgb).all(1).sum()
        assert abs(width - share * 400) <= 2


def test_jpeg_decodes_at_a_reduced_scale_with_its_size_kept():
    arr = np.random.default_rng(3).integers(0, 256, (768, 1024, 3)).astype(np.uint8)
    data = png_bytes(arr, fmt="JPEG", quality=90)
    img = decode_image(data, draft=512)
    assert img.size == (512, 384) and img.info["original_size"] == (1024, 768)
    assert decode_image(png_bytes(arr)).size == (1024, 768)  # PNG has no reduced decode


def test_generator_shapes_and_heads():
    import torch

    from training.palette import Generator

    model = Generator(tuple(range(2, 13))).eval()
    x = torch.from_numpy(np.stack([P.generator_input(np.zeros((50, 70, 3), np.uint8))] * 2))
    out = model(x)
    offsets = P.head_offsets()
    assert out.shape == (2, sum(range(2, 13)), 3)
    assert offsets[2] == 0 and offsets[3] == 2 and offsets[12] == out.shape[1] - 12
    # colours are weighted means of the image's colours: a black image gives black palettes
    np.testing.assert_allclose(out.detach().numpy(), 0, atol=1e-3)


def test_reward_prefers_a_palette_that_covers_the_pixels():
    from training.palette import reward, ycc_to_lab

    px = P.srgb_to_lab(np.array([[255, 0, 0]] * 50 + [[0, 0, 255]] * 50, np.uint8))[None]
    good = P.srgb_to_lab(np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8))
    bad = P.srgb_to_lab(np.array([[[255, 0, 0], [250, 5, 0]]], np.uint8))
    assert reward(good, px)[0] > reward(bad, px)[0]
    assert reward(good, px)[0] == pytest.approx(0, abs=1e-6)
    ycc = np.array([[0.299, 0.5 - 0.168736, 1.0]])  # pure red in YCbCr
    np.testing.assert_allclose(ycc_to_lab(ycc), P.srgb_to_lab(np.array([[255, 0, 0]], np.uint8)), atol=0.05)


def test_trained_entry_says_how_it_was_made_and_how_good_it_is(palette_store):
    meta = entry_metadata(palette_store, "palette:latest")
    test = meta["metrics"]["test"]
    assert set(test["photos"]) == {"kmeans", "kmedians", "generator", "colorthief", "pylette"}
    assert len(test["photos_images"]) == 20
    assert test["best_method"] in ("kmeans", "kmedians", "generator")
    for method, m in test["photos"].items():
        assert 0 < m["mean_delta_e"] < 60, method
    # the evaluation itself must tell methods apart: colorthief's median cut is the weakest here
    assert test["photos"]["kmedians"]["mean_delta_e"] < test["photos"]["colorthief"]["mean_delta_e"]
    assert meta["export_onnx"]["max_abs_diff"] <= meta["export_onnx"]["atol"]
    assert meta["training"]["chroma_finetune"], "chroma fine-tuning ran"
    validation = test["validation"]
    assert validation["after_finetune"] <= validation["adversarial"] + 1e-6  # keeps the best weights
    assert "model.onnx" in meta["files"] and "model.pt" in meta["files"]
