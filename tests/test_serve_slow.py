"""``make serve`` on a fresh store, followed as a user would (benchmarks/first_answer.py), with a small build: the
servers answer first, the missing models build in the background and each task turns ready as its model lands."""

from __future__ import annotations

import pytest

from benchmarks.first_answer import run

pytestmark = pytest.mark.slow
SMALL = [
    "malaria=--synthetic 64 --test-size 8 --epochs 2 --batch-size 16 --input-size 64 --threads 2",
    "palette=--synthetic 120 --test-size 10 --epochs 2 --finetune-epochs 1 --batch-size 32",
]


def test_the_first_answer_comes_at_once_and_each_task_turns_ready_as_its_model_lands(tmp_path):
    lines, status = run(["malaria", "palette"], SMALL, timeout_s=1500, home=tmp_path, poll_s=1.0)
    by = {t.task: t for t in lines}
    palette, malaria = by["palette"], by["malaria"]
    assert palette.answered_s is not None and palette.answered_s < 300 and palette.model == "none"  # k-medians
    assert malaria.building_s is not None and malaria.building_s < malaria.ready_s  # seen building, then ready
    assert malaria.model and malaria.model.startswith("malaria:")
    assert palette.trained_s is not None and palette.trained_s > malaria.trained_s  # malaria builds first (faster)
    assert {s["state"] for s in status["tasks"].values()} == {"done"}
