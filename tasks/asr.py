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
    train_defaults={"synthetic": 300, "epochs": 4, "batch_size": 8, "lr": 1e-4, "freeze": "encoder", "patience": 2},
)

# Decoding every stage uses (export parity, service, benchmark): greedy, each 30-second window decoded on its own
# audio (no previous-text prompt, which lets one error repeat through long audio). Whisper's temperature fallback
# is off: it samples, so the same audio could get two transcripts, and no two libraries sample alike.
DECODING = {"temperature": 0.0, "condition_on_previous_text": False}
FAST_DECODING = {**DECODING, "beam_size": 1, "best_of": 1}  # faster-whisper's defaults are beam search
