"""Keyphrase extraction: text (English or Korean) -> ranked keyphrases with character offsets (BIO tagging)."""

from __future__ import annotations

from tasks.spec import TaggerSpec

KEYPHRASE = TaggerSpec(
    name="keyphrase",
    description="Text (English or Korean) -> ranked keyphrases with character offsets and scores (e5 tagging).",
    synthetic="training.datasets.abstracts:generate",
    # multilingual-e5-small (training/e5.py), its vocabulary trimmed to the pieces of Latin and Hangul text: Korean
    # F1@5 1.000 vs 0.640 for all-MiniLM-L6-v2, English equal (benchmarks/results/keyphrase-bases.md)
    base="e5",
    train_defaults={"synthetic": 600, "epochs": 4, "batch_size": 16, "lr": 1e-4, "patience": 2},
)
