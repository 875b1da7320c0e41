"""Speech decoding every stage shares: the fast path (faster-whisper over a CTranslate2 folder, encoding short
contexts), openai-whisper's own ``transcribe`` (the PyTorch reference), and the decoding options both use.
Export parity, the service and the benchmark all decode through here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tasks.spec import SpeechSpec

# Decoding every stage uses (export parity, service, benchmark): greedy, each 30-second window decoded on its own
# audio (no previous-text prompt, which lets one error repeat through long audio). Whisper's temperature fallback
# is off: it samples, so the same audio could get two transcripts, and no two libraries sample alike.
DECODING = {"temperature": 0.0, "condition_on_previous_text": False}
FAST_DECODING = {**DECODING, "beam_size": 1, "best_of": 1}  # faster-whisper's defaults are beam search
# Runaway repetition (greedy decoding on audio the model does not know loops: "병원에 병원에 병원에 ..."): a run
# of 1-40 characters that repeats 4 or more times in a row, spaces between ignored, is kept once. Applied to every
# backend's text alike, so the in-process path, the service and the benchmarks score the same transcript.
MAX_REPEATS = 3
_REPEAT = re.compile(r"(\S.{0,39}?)(?:\s*\1){" + str(MAX_REPEATS) + ",}", re.DOTALL)


def stop_repetition(text: str) -> str:
    """``text`` with every run repeated more than :data:`MAX_REPEATS` times in a row cut to one occurrence."""
    return _REPEAT.sub(r"\1", text)


def fast_model(
    ct2_dir: Path,
    spec: SpeechSpec,
    device: str = "auto",
    compute_type: str = "auto",
    threads: int = 0,
    short: bool = True,
) -> tuple[object, str]:
    """faster-whisper over a CTranslate2 folder, encoding short contexts (``short``; see
    :meth:`~tasks.spec.SpeechSpec.context_frames`) or 30-second windows. ``auto`` compute type: float32 on a CPU
    (the transcripts PyTorch gives; int8 is faster still but changes some), float16 on a GPU."""
    import ctranslate2
    from faster_whisper import WhisperModel

    class ShortContextWhisper(WhisperModel):
        def encode(self, features: np.ndarray):
            # faster-whisper zero-pads the log-mel of a window shorter than 30 s to 3000 frames; encode only the
            # frames that hold audio, rounded up to the context step (real log-mel values are never exactly 0)
            used = np.flatnonzero((features != 0).any(axis=tuple(range(features.ndim - 1))))
            frames = spec.context_frames(int(used[-1]) + 1 if len(used) else 1)
            return super().encode(np.ascontiguousarray(features[..., :frames]))

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "float32"
    cls = ShortContextWhisper if short else WhisperModel
    model = cls(str(ct2_dir), device=device, compute_type=compute_type, cpu_threads=threads)
    return model, f"ctranslate2/{device}-{compute_type}" + ("" if short else "-30s")


def fast_transcribe(
    model, audio: np.ndarray, language: str, word_timestamps: bool = False, prompt: str | None = None
) -> tuple[str, list]:
    """(text, segments) from faster-whisper with the suite's decoding options (greedy, window by window);
    ``prompt`` is Whisper's initial prompt (vocabulary for the first window)."""
    segments, _ = model.transcribe(
        audio,
        language=language,
        vad_filter=False,
        word_timestamps=word_timestamps,
        initial_prompt=prompt,
        **FAST_DECODING,
    )
    segments = list(segments)
    for segment in segments:  # the guard per segment, so that segment texts and times stay paired
        segment.text = stop_repetition(segment.text)
    return "".join(s.text for s in segments).strip(), segments


def torch_transcribe(model, audio: np.ndarray, language: str, prompt: str | None = None) -> str:
    """openai-whisper's own ``transcribe`` with the same options (the eager PyTorch reference)."""
    fp16 = next(model.parameters()).device.type == "cuda"
    result = model.transcribe(audio, language=language, fp16=fp16, initial_prompt=prompt, **DECODING)
    # the segments' text, as faster-whisper joins it: result["text"] keeps special tokens a model emits mid-text
    return "".join(stop_repetition(s["text"]) for s in result["segments"]).strip()
