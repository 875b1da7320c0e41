"""Tumour task units: letterbox, NMS and decoding, DICOM / NIfTI input, the figshare and YOLO loaders, the
synthetic MRI generator and the patient split."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest

from tasks.detection import Letterbox, iou, letterbox, nms, postprocess, to_input
from tasks.images import ImageLimits, InputError
from tasks.medical import decode_dicom, decode_nifti, is_dicom, is_nifti, window_to_uint8

LIMITS = ImageLimits(min_side=16)
PYDICOM_MR = Path(__import__("pydicom").__file__).parent / "data" / "test_files" / "MR_small.dcm"


def test_letterbox_keeps_aspect_and_maps_back():
    img = np.zeros((100, 200), np.uint8)
    img[40:60, 80:120] = 255
    out, info = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and info.gain == pytest.approx(0.32)
    assert (out[:16] == 114).all() and (out[-16:] == 114).all()  # grey bars above and below
    # A box around the bright patch in model space maps back to the original pixels.
    ys, xs = np.nonzero(out[..., 0] > 200)
    cx, cy, w, h = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, np.ptp(xs) + 1, np.ptp(ys) + 1
    raw = np.zeros((1, 5, 1), np.float32)
    raw[0, :, 0] = [cx, cy, w, h, 0.9]
    det = postprocess(raw, [info], conf=0.5, iou_threshold=0.5)[0]
    assert np.allclose(det.boxes[0], [80, 40, 120, 60], atol=3)


def test_nms_and_per_class_suppression():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    # Two overlapping boxes of different classes both survive (NMS is per class).
    raw = np.zeros((1, 6, 2), np.float32)
    raw[0, :4, 0] = raw[0, :4, 1] = [20, 20, 10, 10]
    raw[0, 4, 0], raw[0, 5, 1] = 0.9, 0.8
    det = postprocess(raw, [Letterbox(1.0, 0, 0, 64, 64)], 0.25, 0.45)[0]
    assert sorted(det.classes.tolist()) == [0, 1]
    assert iou(det.boxes[:1], det.boxes[1:])[0, 0] == pytest.approx(1.0)


def test_to_input_scales_to_unit_range():
    x = to_input([np.full((8, 8, 3), 255, np.uint8)])
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32 and x.max() == 1.0


def test_window_uses_dicom_window_or_percentiles():
    a = np.linspace(0, 1000, 10000, dtype=np.float32).reshape(100, 100)
    assert window_to_uint8(a, center=500, width=200)[0, 0] == 0
    assert window_to_uint8(a, center=500, width=200)[-1, -1] == 255
    pct = window_to_uint8(a)
    assert pct.min() == 0 and pct.max() == 255


def test_dicom_slice_is_decoded_with_rescale_and_window():
    data = PYDICOM_MR.read_bytes()
    assert is_dicom(data)
    out = decode_dicom(data, None, LIMITS)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and out.std() > 10


def test_dicom_errors():
    import pydicom

    ds = pydicom.dcmread(PYDICOM_MR)
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(InputError, match="no pixel data") as e:
        decode_dicom(buf.getvalue(), None, LIMITS)
    assert e.value.status == 422
    with pytest.raises(InputError) as e:
        decode_dicom(PYDICOM_MR.read_bytes()[:2000], None, LIMITS)
    assert 400 <= e.value.status < 500
    with pytest.raises(InputError, match="out of range"):
        decode_dicom(PYDICOM_MR.read_bytes(), 3, LIMITS)


def nifti_bytes(arr: np.ndarray, gz: bool = True) -> bytes:
    import nibabel as nib

    raw = nib.Nifti1Image(arr, np.eye(4)).to_bytes()
    return gzip.compress(raw) if gz else raw


def test_nifti_volume_needs_a_valid_slice_index():
    vol = np.random.default_rng(0).random((40, 30, 5)).astype(np.float32)
    data = nifti_bytes(vol)
    assert is_nifti(data) and is_nifti(nifti_bytes(vol, gz=False))
    out = decode_nifti(data, 2, LIMITS, 10**8)
    assert out.shape == (30, 40)  # rows x columns as a viewer shows the axial slice
    with pytest.raises(InputError, match="give slice_index") as e:
        decode_nifti(data, None, LIMITS, 10**8)
    assert e.value.status == 422
    with pytest.raises(InputError, match="out of range"):
        decode_nifti(data, 5, LIMITS, 10**8)
    with pytest.raises(InputError, match="4-D"):
        decode_nifti(nifti_bytes(np.zeros((20, 20, 3, 2), np.float32)), 0, LIMITS, 10**8)
    assert decode_nifti(nifti_bytes(np.ones((20, 20), np.float32)), None, LIMITS, 10**8).shape == (20, 20)


def test_nifti_gzip_bomb_is_refused():
    data = nifti_bytes(np.zeros((512, 512, 64), np.float32))  # ~64 MB of zeros in a few hundred kB
    with pytest.raises(InputError, match="decompresses to more than") as e:
        decode_nifti(data, 0, LIMITS, max_bytes=10**6)
    assert e.value.status == 413


def write_mat(path: Path, image: np.ndarray, label: int, pid: str) -> None:
    """A figshare file as MATLAB v7.3 writes it: HDF5, struct cjdata, column-major arrays, PID as chars."""
    import h5py

    with h5py.File(path, "w") as f:
        cj = f.create_group("cjdata")
        cj["image"] = image.T
        cj["label"] = np.array([[float(label)]])
        cj["PID"] = np.array([[ord(c)] for c in pid], np.uint16)
        cj["tumorMask"] = (image > 500).astype(np.uint8).T
        cj["tumorBorder"] = np.array([[0.0, 0.0, 1.0, 1.0]])


def test_figshare_mat_reader(tmp_path):
    from training.datasets.figshare import list_mat_files, read_mat

    image = np.zeros((256, 256), np.int16)
    image[50:90, 100:160] = 900
    path = tmp_path / "7.mat"
    write_mat(path, image, 2, "MR040")
    img, cls, pid, box = read_mat(path)
    assert img.shape == (256, 256) and cls == 1 and pid == "MR040"
    assert box == (100.0, 50.0, 160.0, 90.0)
    assert list_mat_files(tmp_path) == [path]


@pytest.mark.parametrize("layout", ["figshare", "yolo"])
def test_training_cli_reads_real_formats_and_splits_by_patient(tmp_path, layout):
    import json
    import os
    import subprocess
    import sys

    from benchmarks.server import ROOT
    from tests.conftest import entry_metadata
    from training.datasets.mri import generate
    from training.detector import write_data_yaml, write_yolo

    images, targets, groups = generate(30, seed=3)
    data = tmp_path / "data"
    if layout == "figshare":
        data.mkdir()
        for i, (img, boxes, group) in enumerate(zip(images, targets, groups, strict=True)):
            if boxes:
                raw = img.astype(np.int16) * 2
                cls, x0, y0, x1, y1 = boxes[0]
                mask = np.zeros(img.shape, bool)
                mask[int(y0) : int(y1), int(x0) : int(x1)] = True
                write_mat(
                    data / f"{i + 1}.mat", np.where(mask, 1000, np.minimum(raw, 400)).astype(np.int16), cls + 1, group
                )
    else:
        write_yolo(data, "train", images[:20], targets[:20])
        write_yolo(data, "val", images[20:], targets[20:])
        write_data_yaml(data, ("meningioma", "glioma", "pituitary"), ["train", "val"])
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "true"}
    args = f"tumor --data {data} --epochs 1 --input-size 64 --batch-size 8 --val-fraction 0.25 --test-fraction 0.25"
    r = subprocess.run(
        [sys.executable, "-m", "training", *args.split()], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    tag = json.loads(r.stdout[r.stdout.index("{") :])["tag"]
    meta = entry_metadata(env, tag)
    assert meta["dataset"]["source"].startswith(f"{layout}:")
    if layout == "figshare":
        assert "split by patient" in meta["dataset"]["source"]
        assert set(meta["training"]["split_sizes"]) == {"train", "val", "test"}
    assert "map50" in meta["metrics"]["test"]


def test_synthetic_mri_plants_lesions_with_boxes_and_groups():
    from training.datasets.mri import generate

    images, targets, groups = generate(60, seed=5)
    assert len(images) == len(targets) == len(groups) == 60
    assert len(set(groups)) >= 8  # several patients
    assert 3 <= sum(not t for t in targets) <= 27  # about a fifth of the slices are healthy
    classes = {t[0][0] for t in targets if t}
    assert classes == {0, 1, 2}
    for img, boxes in zip(images, targets, strict=True):
        for _cls, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
            inside = img[int(y0) : int(y1), int(x0) : int(x1)].astype(float)
            assert inside.max() > np.percentile(img, 90)  # the lesion enhances


def test_patient_split_keeps_groups_together():
    from training.detector import split_groups

    groups = [f"p{i // 6}" for i in range(60)]
    assign = split_groups(groups, {"test": 0.2, "val": 0.2, "train": 0.6}, seed=0)
    assert set(assign) == set(groups) and set(assign.values()) == {"test", "val", "train"}
    per_split = {s: sum(assign[g] == s for g in groups) for s in ("test", "val", "train")}
    assert per_split["train"] >= 30 and per_split["test"] >= 6
