"""Speech recognition: Korean audio -> text and timed segments (Whisper fine-tuned on KsponSpeech).

Not registered in ``tasks.TASKS`` yet: the service and the fast-backend export land with the rest of the
speech issue; training and evaluation already work (``training.asr``).
"""

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
