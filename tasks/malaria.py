"""Malaria: thin blood-smear cell crops -> Parasitized / Uninfected (NIH cell images).

Seed method: EfficientNet-B0 fine-tuned on the NIH set (paper: 94.70 % accuracy), Grad-CAM to show where the
model looked. NIH crops are single red cells on a black background, roughly 100-200 px a side.
"""

from __future__ import annotations

from tasks.spec import ImageClassifierSpec

MALARIA = ImageClassifierSpec(
    name="malaria",
    labels=("Parasitized", "Uninfected"),
    description="Blood-smear cell image -> Parasitized / Uninfected (EfficientNet-B0, Grad-CAM).",
    synthetic="training.datasets.cells:generate",
    title="Malaria cells",
    heading="Malaria parasites in blood-smear cells",
    backbone="efficientnet_b0",
    input_size=128,
    positive_label="Parasitized",
    train_defaults={"synthetic": 2000, "epochs": 6, "batch_size": 32, "lr": 2e-3},
)
