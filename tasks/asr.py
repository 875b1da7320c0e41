"""Speech recognition: Korean audio -> text and timed segments (Whisper fine-tuned on KsponSpeech or synthetic
speech; served through CTranslate2 / faster-whisper)."""

from __future__ import annotations

from tasks.spec import SpeechSpec

ASR = SpeechSpec(
    name="asr",
    language="ko",
    description="Korean speech (wav, flac, mp3, ogg, webm, m4a) -> text and timed segments (Whisper).",
    synthetic="training.datasets.korean_speech:generate",
    base="packaged",
    # Set B of the speech study (training/asr_sets.py): the generator's clips and real sentences, early stopping
    # on real text from other documents
    train_defaults={
        "synthetic": 300,
        "real_text": 300,
        "epochs": 4,
        "batch_size": 8,
        "lr": 1e-4,
        "freeze": "encoder",
        "patience": 2,
    },
)
