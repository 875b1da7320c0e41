"""Whisper fine-tuning end to end on a tiny randomly initialised Whisper and a few synthetic clips: the loop
runs, the loss falls, CER is measured zero-shot and fine-tuned on the same held-out clips."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.asr import cer, train, wer
from training.config import TrainConfig, override


def test_cer_ignores_spaces_and_punctuation_and_wer_counts_words():
    assert cer(["환자 혈압"], ["환자혈압"]) == 0.0
    assert cer(["국민은 자유를 가진다."], ["국민은, 자유를 가진다"]) == 0.0
    assert cer(["가나다라"], ["가나다마"]) == pytest.approx(0.25)
    assert wer(["환자 혈압 측정"], ["환자 혈압 즉정."]) == pytest.approx(1 / 3)


def test_runaway_repetition_is_cut_alike_everywhere():
    from tasks.speech import stop_repetition

    assert stop_repetition("병원에 병원에 병원에 병원에 병원에 갔습니다") == "병원에 갔습니다"
    assert stop_repetition("혈압을 쟀다. 혈압을 쟀다. 혈압을 쟀다. 혈압을 쟀다.") == "혈압을 쟀다."
    assert stop_repetition("네 네 네, 알겠습니다") == "네 네 네, 알겠습니다"  # three times is speech, not a loop
    assert stop_repetition("하하하 좋아요") == "하하하 좋아요"


def test_terms_keep_only_generated_sentences_that_hold_them():
    from training.datasets.korean_speech import sentences

    chosen = sentences(20, seed=0, held_out=False, terms=("혈압", "두통"))
    assert len(chosen) == 20 and all("혈압" in s or "두통" in s for s in chosen)


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
    real = m["real_text"]  # held-out real text, scored for the stock and the tuned model
    assert real["n"] == 3 and {"cer", "wer"} <= set(real["zero_shot"]) and {"cer", "wer"} <= set(real["fine_tuned"])
    assert result.real_text["test"]["sentences"] == 3 and result.real_text["train"]["sentences"] == 0
    assert all("val_cer" in row and "val_cer_generator" in row for row in result.fit.history)
    assert result.train_size == 6


def test_short_context_is_encoded_alike_in_training_and_in_ctranslate2(tiny_base, tmp_path):
    """The fast path encodes only the audio a window holds; fine-tuning must see exactly those encoder outputs.
    Training's encoder on its short log-mel == faster-whisper's (CTranslate2) on the window it pads and trims."""
    import numpy as np
    import whisper
    from faster_whisper.audio import pad_or_trim

    from exporters.whisper import save_ct2
    from tasks.asr import ASR
    from tasks.speech import fast_model
    from training.asr import encode, log_mel, short_mel
    from training.datasets.korean_speech import generate
    from training.whisper_ct2 import packaged_model_dir

    model = whisper.load_model(str(tiny_base), device="cpu")
    save_ct2(torch.load(tiny_base), packaged_model_dir(tmp_path / "cache"), tmp_path / "ct2")
    fast, backend = fast_model(tmp_path / "ct2", ASR, "cpu", "float32", short=True)
    assert backend == "ctranslate2/cpu-float32"
    audio = generate(1, seed=3)[0][0]  # 3-5 s of speech
    mel = short_mel(audio, 80, ASR)
    assert mel.shape == (80, 500)  # 5 s context, not 30
    with torch.no_grad():
        ours = encode(model, mel[None]).numpy()
        window = log_mel(audio, 80)[None]
        assert torch.allclose(encode(model, window), model.encoder(window), atol=1e-6)  # same encoder at 30 s
    theirs = np.array(fast.encode(pad_or_trim(fast.feature_extractor(audio)[:, :-1])))
    assert theirs.shape == ours.shape == (1, 250, 64)
    assert np.abs(theirs - ours).max() < 1e-3


def test_fine_tuning_reads_a_manifest_of_audio_files(tiny_base, tmp_path):
    """A CSV manifest of audio files (here FLAC, decoded by ffmpeg) and transcripts, split train / val / test."""
    import subprocess

    import numpy as np

    from tasks.asr import ASR
    from training.config import validate
    from training.datasets.korean_speech import generate

    audio, texts = generate(6, seed=5)
    rows = ["audio,text"]
    for i, (a, t) in enumerate(zip(audio, texts, strict=True)):
        pcm = (np.clip(a, -1, 1) * 32767).astype("<i2").tobytes()
        cmd = ["ffmpeg", "-loglevel", "error", "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-", f"c{i}.flac"]
        subprocess.run(cmd, input=pcm, cwd=tmp_path, check=True)
        rows.append(f"c{i}.flac,{t}")
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    values = {"data": str(tmp_path / "clips.csv"), "epochs": 1, "batch_size": 2, "base": str(tiny_base)}
    cfg = override(TrainConfig(task="asr"), {**values, "test_fraction": 0.2, "val_fraction": 0.2})
    validate(cfg)
    result = train(dataclasses.replace(ASR, max_target_tokens=20), cfg)
    assert result.source.startswith("manifest:") and result.train_size == 4 and result.metrics["n"] == 1
    with pytest.raises(ValueError, match="speech manifest"):
        validate(override(cfg, {"data": str(tmp_path / "c0.flac")}))
