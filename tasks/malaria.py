"""Malaria: thin blood-smear cell crops -> Parasitized / Uninfected (NIH cell images).

Seed method: EfficientNet-B0 fine-tuned from ImageNet on the NIH set (paper: 94.70 % accuracy), Grad-CAM to show
where the model looked. The ImageNet EfficientNet that ships as a package is Lite0 (timm ``tf_efficientnet_lite0``:
B0's stem and stages without squeeze-and-excitation, ReLU6 for Swish, inputs scaled to [-1, 1]), so the demo model
starts from it; ``efficientnet_b0`` stays a backbone for users who bring torchvision's B0 weights
(``--pretrained FILE``). NIH crops are single red cells on a black background, roughly 100-200 px a side.
"""

from __future__ import annotations

from tasks.spec import ImageClassifierSpec

MALARIA = ImageClassifierSpec(
    name="malaria",
    labels=("Parasitized", "Uninfected"),
    description="Blood-smear cell image -> Parasitized / Uninfected (EfficientNet-Lite0 from ImageNet, Grad-CAM).",
    synthetic="training.datasets.cells:generate",
    title="Malaria cells",
    heading="Malaria parasites in blood-smear cells",
    backbone="efficientnet_lite0",
    input_size=128,
    mean=(0.5, 0.5, 0.5),  # the Lite0 ImageNet weights' normalisation (training/pretrained.py)
    std=(0.5, 0.5, 0.5),
    positive_label="Parasitized",
    shifts=("stain", "illumination", "blur"),
    train_defaults={
        "synthetic": 2000,
        "epochs": 6,
        "batch_size": 32,
        "lr": 2e-3,
        "pretrained": "imagenet",
        "random_baseline": True,
    },
)
