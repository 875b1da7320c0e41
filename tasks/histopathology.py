"""Prostate histopathology: an H&E tissue tile -> benign / Gleason grade 3 / 4 / 5.

Seed study: MobileNet, ResNet50 and DenseNet121 from ImageNet with three layer-freezing strategies; best MobileNet
with half the layers frozen. The demo model starts from the packaged ImageNet MobileNetV2 (training/pretrained.py);
``python -m training.freezing histopathology`` compares the three strategies from that start (docs/results.md).
"""

from __future__ import annotations

from tasks.spec import ImageClassifierSpec

HISTOPATHOLOGY = ImageClassifierSpec(
    name="histopathology",
    labels=("benign", "grade3", "grade4", "grade5"),
    description="H&E prostate tissue tile -> benign / Gleason grade 3 / 4 / 5 (MobileNetV2 from ImageNet, Grad-CAM).",
    synthetic="training.datasets.histology:generate",
    title="Prostate tissue",
    heading="Gleason grade of prostate tissue tiles",
    backbone="mobilenet_v2",
    input_size=128,
    shifts=("stain", "blur"),  # not scale: gland and nucleus size are what the grades differ in
    train_defaults={
        "synthetic": 2400,
        "epochs": 8,
        "batch_size": 32,
        "lr": 2e-3,
        "freeze": "half",  # the seed study's choice; from ImageNet as good held-out as none, more robust
        "pretrained": "imagenet",
        "random_baseline": True,
    },
)
