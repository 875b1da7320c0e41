"""Breast thermography: a frontal thermogram -> normal / abnormal (DMR-IR style).

Seed method: MobileNetV2 with an adaptive learning rate and early stopping (here: warm-up then cosine decay, and
early stopping on validation loss, as every classifier of the suite trains).
"""

from __future__ import annotations

from tasks.spec import ImageClassifierSpec

THERMAL = ImageClassifierSpec(
    name="thermal",
    labels=("normal", "abnormal"),
    description="Frontal breast thermogram -> normal / abnormal (MobileNetV2 from ImageNet, Grad-CAM).",
    synthetic="training.datasets.thermal:generate",
    title="Breast thermogram",
    heading="Breast thermograms: normal or abnormal",
    backbone="mobilenet_v2",
    input_size=128,
    positive_label="abnormal",
    shifts=("illumination", "blur"),
    train_defaults={
        "synthetic": 1600,
        "epochs": 8,
        "batch_size": 32,
        "lr": 2e-3,
        "patience": 3,
        "pretrained": "imagenet",
        "random_baseline": True,
    },
)
