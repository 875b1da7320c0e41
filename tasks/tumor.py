"""Tumour: brain MRI slice -> boxes of meningioma / glioma / pituitary tumours (figshare brain-tumour set).

Seed method: YOLOv4-tiny on the figshare set of 3,064 T1 contrast slices (paper: mAP 93.14 %); here ultralytics
YOLO11n built from yaml, exported to ONNX and served with our own letterbox and NMS.
"""

from __future__ import annotations

from tasks.spec import DetectorSpec

TUMOR = DetectorSpec(
    name="tumor",
    labels=("meningioma", "glioma", "pituitary"),  # figshare label 1, 2, 3
    description="Brain MRI slice (PNG, JPEG, DICOM, NIfTI) -> tumour boxes with class and confidence (YOLO).",
    synthetic="training.datasets.mri:generate",
    model_yaml="yolo11n.yaml",
    input_size=256,
    train_defaults={"synthetic": 800, "epochs": 20, "batch_size": 16, "lr": 0.002, "patience": 10},
)
