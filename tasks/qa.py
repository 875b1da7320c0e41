"""Korean machine reading (KorQuAD style): a question and a passage -> the answer's span of the passage, or no
answer (extractive question answering on the multilingual e5 encoder)."""

from __future__ import annotations

from tasks.spec import QASpec

QA = QASpec(
    name="qa",
    description="A question and a passage (Korean, KorQuAD style) -> the answer's span of the passage with character "
    "offsets and a score, or no answer.",
    synthetic="training.datasets.reading:generate",
    base="e5",
    head="linear",
    train_defaults={"synthetic": 1200, "epochs": 4, "batch_size": 16, "lr": 1e-4, "patience": 2, "no_answer": 0.2},
)
