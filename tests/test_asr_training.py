"""Whisper fine-tuning end to end on a tiny randomly initialised Whisper and a few synthetic clips: the loop
runs, the loss falls, CER is measured zero-shot and fine-tuned on the same held-out clips."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.asr import cer, train, wer
from training.config import TrainConfig, override


def test_cer_ignores_spaces_and_wer_counts_words():
    assert cer(["환자 혈압"], ["환자혈압"]) == 0.0
    assert cer(["가나다라"], ["가나다마"]) == pytest.approx(0.25)
    assert wer(["환자 혈압 측정"], ["환자 혈압 즉정"]) == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=1,
        n_audio_layer=1,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=1,
        n_text_layer=1,
    )
    torch.manual_seed(0)
    model = Whisper(dims)
    # openai-whisper allocates the decoder's positional embedding with torch.empty (weights always come from a
    # checkpoint); a random model must initialise it, or it holds whatever memory it got (NaN at times).
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("freeze", ["encoder", "none"])
def test_fine_tuning_runs_and_learns(tiny_base, freeze):
    from tasks.asr import ASR

    cfg = override(
        TrainConfig(task="asr"),
        {
            "synthetic": 8,
            "test_size": 3,
            "epochs": 2,
            "batch_size": 4,
            "lr": 3e-3,
            "freeze": freeze,
            "base": str(tiny_base),
            "val_fraction": 0.25,
            "patience": 5,
            "warmup_fraction": 0.0,
        },
    )
    result = train(dataclasses.replace(ASR, max_target_tokens=40), cfg)
    losses = [row["train_loss"] for row in result.fit.history]
    assert len(losses) == 2 and losses[1] < losses[0]
    m = result.metrics
    assert m["n"] == 3 and {"cer", "wer"} <= set(m["zero_shot"]) and {"cer", "wer"} <= set(m["fine_tuned"])
    assert all("val_cer" in row for row in result.fit.history)
    assert result.train_size == 6
