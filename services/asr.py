"""Korean speech recognition service: ``bentoml serve services.asr:Asr``.

``POST /v1/asr/transcribe`` takes one audio file (one of ``tasks.audio.FORMATS``, told by its first bytes) as a
multipart upload (field ``audio``), a raw body or JSON with base64. ffmpeg decodes it in memory to 16 kHz mono,
reading nothing but the upload; audio longer than ``max_audio_s`` is refused with 413. The fine-tuned Whisper
runs through CTranslate2 (faster-whisper), window after 30-second window, each short window encoding only the
audio it holds.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Files, Options, Prepared, Route, TaskService, make_service
from tasks import get_task
from tasks.audio import FORMATS, decode_audio
from tasks.images import Budget

TASK = get_task("asr")
RAW_TYPES = ("audio/", "video/webm", "video/mp4", "video/ogg", "application/octet-stream", "application/ogg")
SILENCE_PEAK = 1e-4  # -80 dBFS: nothing a microphone records as speech
MAX_PROMPT_CHARS = 200  # Whisper keeps at most 223 prompt tokens; a Hangul syllable is one to three


class ServiceArgs(CommonArgs):
    """``bentoml serve services.asr:Asr --arg NAME=VALUE``."""

    timeout_s: float = Field(600.0, gt=0, le=3600, description="a long recording takes minutes on a CPU")
    latency_budget_s: float = Field(
        300.0, gt=0, le=3600, description="longest predicted wait for the model a request is admitted with (503 past)"
    )
    compute_type: Literal["auto", "float32", "int8", "float16", "int8_float16"] = Field(
        "auto", description="CTranslate2 precision; auto: float32 on a CPU, float16 on a GPU"
    )
    short_context: bool = Field(
        True, description="encode only the audio a window holds (faster), where the export validated it"
    )
    max_audio_s: float = Field(600.0, gt=0, le=24 * 3600, description="longest audio accepted, seconds")
    max_body_mb: float = Field(128.0, gt=0, le=4096, description="largest request body, MiB (413 past it)")


ARGS = bentoml.use_arguments(ServiceArgs)


class TranscribeOptions(Options):
    word_timestamps: bool = Field(False, description="add start and end times of each word")
    prompt: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="vocabulary or context for this recording (Whisper's initial prompt), e.g. domain terms: "
        "'두통, 혈압, 심전도'; it biases the words chosen, it is not a transcript",
    )


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float


class Segment(BaseModel):
    start: float = Field(description="seconds from the start of the audio")
    end: float
    text: str
    words: list[Word] | None = Field(None, description="with word_timestamps=true")


class TranscribeResponse(BaseModel):
    text: str = Field(description="the whole transcript; empty for silence")
    segments: list[Segment]
    language: str
    duration_s: float = Field(description="length of the decoded audio, seconds")
    model: str = Field(description="model-store tag that produced the answer")
    backend: str
    elapsed_ms: float
    rtf: float = Field(description="real-time factor: processing time / audio length")


TRANSCRIBE = Route(
    "/transcribe",
    "Transcribe Korean speech",
    Files("audio", raw_types=RAW_TYPES, description=f"audio file: {FORMATS}"),
    TranscribeOptions,
    TranscribeResponse,
)


class Transcriber(TaskService):
    """Whisper fine-tuned for Korean, served by CTranslate2 (faster-whisper), one recording at a time."""

    routes = (TRANSCRIBE,)
    batch_limit = 1
    requires = ("ct2/",)
    export_hint = "ct2"

    def load_model(self, entry) -> None:
        from tasks.audio import ffmpeg_path
        from tasks.speech import fast_model
        from tasks.store import verified_file

        ffmpeg_path()  # fail at start, not at the first request, where ffmpeg is missing
        files = [name for name in entry.info.metadata["files"] if name.startswith("ct2/")]
        paths = {name: verified_file(entry, name) for name in files}
        # short contexts only where the export validated them for this model
        short = self.args.short_context and bool(entry.info.metadata["export_ct2"].get("short_context"))
        args = self.args
        self.model, self.backend_name = fast_model(
            paths["ct2/model.bin"].parent, TASK, args.device, args.compute_type, self.threads, short
        )

    def batch_functions(self) -> dict[str, Any]:
        return {"collate": lambda jobs: jobs[0], "split": lambda out, sizes: [out]}

    def warm_up(self) -> None:
        self.run((np.zeros(TASK.sample_rate, np.float32), False, None))

    def run(self, job: tuple[np.ndarray, bool, str | None]) -> list[Segment]:
        """Transcribe one recording (CTranslate2 releases the GIL; its own threads parallelise inside)."""
        from tasks.speech import fast_transcribe

        audio, words, prompt = job
        _, segments = fast_transcribe(self.model, audio, TASK.language, word_timestamps=words, prompt=prompt)
        duration = len(audio) / TASK.sample_rate

        def t(seconds: float) -> float:  # a model's timestamp token can point past the end of short audio
            return round(min(seconds, duration), 2)

        return [
            Segment(
                start=t(s.start),
                end=t(s.end),
                text=s.text.strip(),
                words=[
                    Word(start=t(w.start), end=t(w.end), word=w.word, probability=round(w.probability, 3))
                    for w in s.words or []
                ]
                if words
                else None,
            )
            for s in segments
            if s.text.strip()
        ]

    def prepare(self, route: Route, inputs, options: TranscribeOptions, budget: Budget) -> Prepared:
        """ffmpeg decodes to 16 kHz mono float32, stopping past max_audio_s (the audio's budget); silence skips
        the model."""
        audio = decode_audio(inputs[0].data, self.args.max_audio_s, TASK.sample_rate)
        silent = len(audio) == 0 or float(np.abs(audio).max()) < SILENCE_PEAK
        seconds = len(audio) / TASK.sample_rate
        job = None if silent else (audio, options.word_timestamps, options.prompt)
        return Prepared(job, cost=seconds, state={"duration": seconds})

    def finish(self, route: Route, prepared: Prepared, segments, options: TranscribeOptions) -> dict[str, Any]:
        segments = segments or []
        duration = prepared.state["duration"]
        elapsed = time.perf_counter() - prepared.started
        return {
            "rtf": round(elapsed / duration, 4) if duration else 0.0,
            "text": " ".join(s.text for s in segments),
            "segments": segments,
            "language": TASK.language,
            "duration_s": round(duration, 3),
        }


Asr = make_service(Transcriber, TASK.name, TASK.description, ARGS)
