"""Keyphrase extraction: text (English or Korean) -> ranked keyphrases with character offsets (BIO tagging)."""

from __future__ import annotations

from tasks.spec import TaggerSpec

KEYPHRASE = TaggerSpec(
    name="keyphrase",
    description="Text (English or Korean) -> ranked keyphrases with character offsets and scores (BERT tagging).",
    synthetic="training.datasets.abstracts:generate",
    train_defaults={"synthetic": 600, "epochs": 4, "batch_size": 16, "lr": 1e-4, "patience": 2},
)
