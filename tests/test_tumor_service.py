"""The tumour service over real HTTP, built by the CLIs (train -> export -> serve): agreement with ultralytics'
own predictions, every input format, and bad input answered with a 4xx."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tasks.detection import iou
from tests.conftest import entry_metadata, png_bytes

pytestmark = pytest.mark.http
DETECT = "/v1/tumor/detect"
PYDICOM_MR = Path(__import__("pydicom").__file__).parent / "data" / "test_files" / "MR_small.dcm"


@pytest.fixture(scope="module")
def client(tumor_server):
    with httpx.Client(base_url=tumor_server[0], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def slices():
    from training.datasets.mri import generate

    images, targets, _ = generate(12, seed=777_001)
    return images, targets


def boxes_of(resp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    body = resp.json()
    b = body["boxes"]
    return (
        np.array([[x["x0"], x["y0"], x["x1"], x["y1"]] for x in b], np.float32).reshape(-1, 4),
        np.array([x["class_id"] for x in b]),
        np.array([x["confidence"] for x in b]),
    )


def ultralytics_predictions(store: dict[str, str], paths: list[Path], conf: float) -> list[dict]:
    """Run ultralytics' own predict in a subprocess (the service process never imports ultralytics)."""
    script = f"""
import json, sys, tempfile
from pathlib import Path
from training.detector import offline_ultralytics
offline_ultralytics(Path(tempfile.mkdtemp()))
import bentoml
from ultralytics import YOLO
entry = bentoml.models.get("tumor:latest")
model = YOLO(str(Path(entry.path) / "model.pt"))
out = []
for r in model.predict({[str(p) for p in paths]!r}, imgsz=entry.info.metadata["input_size"], conf={conf},
                       iou=0.45, verbose=False, device="cpu"):
    out.append({{"xyxy": r.boxes.xyxy.tolist(), "cls": r.boxes.cls.tolist(), "conf": r.boxes.conf.tolist()}})
print(json.dumps(out))
"""
    from benchmarks.server import ROOT

    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=store, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_boxes_match_ultralytics_predictions(client, tumor_store, slices, tmp_path):
    """Same model, same images: every ultralytics box above a margin has a service box of the same class with
    IoU >= 0.9, and vice versa. Slices already at the model's input size go through both pipelines unresized
    (tight margin); slices at their own size are letterboxed by each side its own way (square vs minimal
    padding), so a wider margin."""
    size = entry_metadata(tumor_store, "tumor:latest")["input_size"]
    from tasks.detection import letterbox

    cases = [(letterbox(img, size)[0][..., 0], 0.1) for img in slices[0]] + [(img, 0.3) for img in slices[0]]
    paths = []
    for i, (img, _) in enumerate(cases):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png_bytes(img))
    conf = 0.05
    reference = ultralytics_predictions(tumor_store, paths, conf)
    compared = 0
    for path, ref, (_, margin) in zip(paths, reference, cases, strict=True):
        resp = client.post(DETECT, params={"conf": conf}, files={"image": (path.name, path.read_bytes())})
        got_boxes, got_cls, got_conf = boxes_of(resp)
        ref_boxes = np.array(ref["xyxy"]).reshape(-1, 4)
        ref_cls, ref_conf = np.array(ref["cls"]), np.array(ref["conf"])
        for boxes_a, cls_a, conf_a, boxes_b, cls_b in (
            (ref_boxes, ref_cls, ref_conf, got_boxes, got_cls),
            (got_boxes, got_cls, got_conf, ref_boxes, ref_cls),
        ):
            for k in np.nonzero(conf_a >= margin)[0]:
                same = cls_b == cls_a[k]
                assert same.any(), f"{path.name}: no class-{cls_a[k]} box on the other side"
                assert iou(boxes_a[k : k + 1], boxes_b[same]).max() >= 0.9, path.name
                compared += 1
    assert compared >= 4, f"only {compared} boxes compared: the test model is too weak, train it longer"


def test_png_jpeg_and_json_agree_and_fit_the_image(client, slices):
    img = slices[0][0]
    a = client.post(DETECT, files={"image": ("s.png", png_bytes(img), "image/png")})
    b = client.post(DETECT, json={"image": base64.b64encode(png_bytes(img)).decode()})
    c = client.post(DETECT, content=png_bytes(img), headers={"content-type": "image/png"})
    assert a.status_code == b.status_code == c.status_code == 200, a.text
    assert a.json()["boxes"] == b.json()["boxes"] == c.json()["boxes"]
    body = a.json()
    assert (body["width"], body["height"]) == (img.shape[1], img.shape[0]) and body["input_format"] == "png"
    assert body["model"].startswith("tumor:") and body["backend"] == "onnxruntime/cpu"
    for box in body["boxes"]:
        assert 0 <= box["x0"] < box["x1"] <= img.shape[1] and 0 <= box["y0"] < box["y1"] <= img.shape[0]
        assert box["label"] in ("meningioma", "glioma", "pituitary")
    j = client.post(DETECT, files={"image": ("s.jpg", png_bytes(np.stack([img] * 3, -1), fmt="JPEG"))})
    assert j.status_code == 200 and j.json()["input_format"] == "jpeg"


def dicom_bytes(pixels: np.ndarray, slope: float = 0.5, intercept: float = -100.0) -> bytes:
    """A DICOM MR slice built from pydicom's MR_small with new pixels stored through slope / intercept."""
    import pydicom

    ds = pydicom.dcmread(PYDICOM_MR)
    stored = ((pixels.astype(np.float32) - intercept) / slope).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = stored.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter, ds.WindowWidth = 127.5, 255.0
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_with_rescale_and_window_gives_the_png_answer(client, slices):
    """A slice stored in DICOM (slope 0.5, intercept -100, window 0..255) is the same picture as its PNG."""
    img = slices[0][1]
    png = client.post(DETECT, files={"image": ("s.png", png_bytes(img))}).json()
    dcm = client.post(
        DETECT, content=dicom_bytes(img.astype(np.float32)), headers={"content-type": "application/dicom"}
    )
    assert dcm.status_code == 200, dcm.text
    assert dcm.json()["input_format"] == "dicom" and (dcm.json()["width"], dcm.json()["height"]) == (
        png["width"],
        png["height"],
    )
    a, b = boxes_of(dcm)[0], np.array([[x["x0"], x["y0"], x["x1"], x["y1"]] for x in png["boxes"]]).reshape(-1, 4)
    assert len(a) == len(b) and (len(a) == 0 or np.diag(iou(a, b)).min() > 0.95)
    real = client.post(DETECT, files={"image": ("mr.dcm", PYDICOM_MR.read_bytes(), "application/dicom")})
    assert real.status_code == 200 and real.json()["width"] == 64


def nifti(arr: np.ndarray) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(arr, np.eye(4)).to_bytes())


def test_nifti_volume_slice(client):
    vol = np.random.default_rng(0).random((80, 60, 7)).astype(np.float32) * 1000
    r = client.post(
        DETECT, params={"slice_index": 3}, content=nifti(vol), headers={"content-type": "application/octet-stream"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input_format"] == "nifti" and body["slice_index"] == 3
    assert (body["width"], body["height"]) == (80, 60)


def test_annotated_png(client, slices):
    img = slices[0][2]
    r = client.post(DETECT, params={"annotate": "true"}, files={"image": ("s.png", png_bytes(img))})
    pic = Image.open(io.BytesIO(base64.b64decode(r.json()["annotated_png"])))
    assert pic.format == "PNG" and pic.size == (img.shape[1], img.shape[0])


def no_pixels_dicom() -> bytes:
    import pydicom

    ds = pydicom.dcmread(PYDICOM_MR)
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


VOLUME = nifti(np.ones((40, 40, 5), np.float32))


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"files": {"image": ("e.png", b"")}}, 400, "empty"),
        ({"content": PYDICOM_MR.read_bytes()[:3000], "headers": {"content-type": "application/dicom"}}, 400, "DICOM"),
        ({"content": no_pixels_dicom(), "headers": {"content-type": "application/dicom"}}, 422, "no pixel data"),
        ({"content": VOLUME, "headers": {"content-type": "application/octet-stream"}}, 422, "slice_index"),
        (
            {"content": VOLUME, "params": {"slice_index": 9}, "headers": {"content-type": "application/octet-stream"}},
            422,
            "out of range",
        ),
        (
            {
                "content": nifti(np.ones((20, 20, 2, 3), np.float32)),
                "headers": {"content-type": "application/octet-stream"},
            },
            422,
            "4-D",
        ),
        ({"files": {"image": ("big.png", png_bytes(np.zeros((1100, 1000), np.uint8)))}}, 413, "too large"),
        ({"files": {"image": ("x.txt", b"not an image at all", "text/plain")}}, 415, "not a readable image"),
        ({"content": b"\x1f\x8b garbage", "headers": {"content-type": "application/gzip"}}, 400, "gzip"),
        (
            {"files": {"image": ("s.png", png_bytes(np.zeros((64, 64), np.uint8)))}, "params": {"conf": 1.5}},
            422,
            "conf",
        ),
        ({"files": {"image": ("s.png", png_bytes(np.zeros((64, 64), np.uint8)))}, "params": {"iou": -1}}, 422, "iou"),
        ({"content": b"x" * (9 * 1024 * 1024), "headers": {"content-type": "application/octet-stream"}}, 413, "limit"),
        ({"content": b"{}", "headers": {"content-type": "text/csv"}}, 415, "unsupported content type"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, words):
    r = client.post(DETECT, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_readiness_metrics_and_docs(client):
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert {"multipart/form-data", "application/json", "application/dicom"} <= set(
        spec["paths"][DETECT]["post"]["requestBody"]["content"]
    )
    assert 'task="tumor"' in client.get("/metrics").text


def test_store_entry_reports_detection_metrics(tumor_store):
    meta = entry_metadata(tumor_store, "tumor:latest")
    test = meta["metrics"]["test"]
    assert {"map50", "map50_95", "precision", "recall", "per_class"} <= set(test)
    assert "split by patient" in meta["dataset"]["source"]
    assert meta["export_onnx"]["min_iou"] >= 0.9 and set(meta["files"]) == {"model.pt", "model.onnx"}


def test_service_never_imports_ultralytics():
    """AGPL ultralytics is a training dependency only: importing the service must not pull it in."""
    from benchmarks.server import ROOT

    code = "import sys, services.tumor; print('ultralytics' in sys.modules or 'cv2' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_tensorrt_export_of_the_detector_explains_what_is_missing(tumor_store):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the GPU run covers the real build")
    except ImportError:
        pass
    r = subprocess.run(
        [sys.executable, "-m", "exporters", "tumor", "--format", "tensorrt"],
        env=tumor_store,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 3 and "TensorRT is not installed" in r.stderr


def test_training_starts_from_a_pretrained_file(tumor_store, tmp_path):
    """--pretrained takes an ultralytics weight file (here the test model's own checkpoint)."""
    from benchmarks.server import ROOT
    from tests.conftest import entry_metadata

    weights = next(Path(tumor_store["BENTOML_HOME"], "models", "tumor").glob("*/model.pt"))
    env = {**tumor_store, "BENTOML_HOME": str(tmp_path / "home")}
    args = f"tumor --synthetic 24 --test-size 6 --epochs 1 --input-size 64 --batch-size 8 --pretrained {weights}"
    r = subprocess.run(
        [sys.executable, "-m", "training", *args.split()], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert entry_metadata(env, "tumor:latest")["config"]["pretrained"] == str(weights)
