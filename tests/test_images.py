"""Decoding, validation and preprocessing of images (the transform every model sees)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.images import ImageLimits, InputError, decode_image, normalize, preprocess, to_rgb
from tests.conftest import png_bytes

RGB = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP"])
def test_accepted_formats_decode_to_rgb(fmt):
    img = decode_image(png_bytes(RGB, fmt=fmt))
    assert img.mode == "RGB" and img.size == (50, 40)
    if fmt != "JPEG":  # lossless formats round-trip exactly
        assert np.array_equal(np.asarray(img), RGB)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "1", "I;16"])
def test_unusual_modes_are_converted(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "LA" else "PNG")
    img = decode_image(png_bytes(RGB, mode=mode, fmt=fmt))
    assert img.mode == "RGB" and img.size == (50, 40)


def test_sixteen_bit_grey_uses_its_full_range():
    ramp = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)  # 0 .. ~60000
    raw = png_bytes(ramp)  # PIL stores uint16 arrays as I;16 PNG
    arr = np.asarray(decode_image(raw))
    assert arr.min() == 0 and arr.max() == 255  # stretched, not clipped to white


def test_alpha_is_composited_over_black():
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent
    arr = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert arr.max() == 0


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, "empty"),
        (b"definitely not an image", 415, "not a readable image"),
        (png_bytes(RGB, fmt="GIF"), 415, "unsupported image format GIF"),
        (png_bytes(RGB)[:200], 400, "truncated"),
        (png_bytes(np.zeros((8, 8, 3), np.uint8)), 422, "too small"),
    ],
)
def test_bad_images_raise_input_errors(data, status, words):
    with pytest.raises(InputError) as e:
        decode_image(data)
    assert e.value.status == status
    assert words in str(e.value)


def test_decompression_bomb_is_refused_before_decoding():
    # 6000 x 6000 of zeros compresses to a few kB but would need 108 MB decoded.
    bomb = png_bytes(np.zeros((6000, 6000), np.uint8))
    assert len(bomb) < 200_000
    with pytest.raises(InputError) as e:
        decode_image(bomb, ImageLimits(max_pixels=10_000_000))
    assert e.value.status == 413 and "6000x6000" in str(e.value)


def test_preprocess_shape_and_normalisation():
    white = Image.fromarray(np.full((30, 60, 3), 255, np.uint8))
    x = preprocess([white, white], 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, 2.0)  # (1 - 0.5) / 0.25
    assert x.flags["C_CONTIGUOUS"]


def test_normalize_channel_order_is_rgb():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[..., 2] = 255  # blue
    x = normalize(img, (0, 0, 0), (1, 1, 1))
    assert x[0, 2].min() == 1.0 and x[0, :2].max() == 0.0


def test_normalize_matches_the_textbook_formula():
    batch = np.random.default_rng(1).integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = ((batch / 255.0 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    assert np.abs(normalize(batch, mean, std) - expected).max() < 1e-5


@pytest.mark.parametrize("mode", ["L", "RGB", "I;16", "P"])
def test_gray_decoding_keeps_the_format_name(mode):
    img = decode_image(png_bytes(RGB, mode=mode), gray=True)
    assert img.mode == "L" and img.size == (50, 40) and img.info["format"] == "PNG"
