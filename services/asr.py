"""Korean speech recognition service: ``bentoml serve services.asr:Asr``.

``POST /v1/asr/transcribe`` takes one audio file (wav, flac, mp3, ogg, webm, m4a, or anything else ffmpeg reads)
as a multipart upload (field ``audio``), a raw body or JSON with base64. ffmpeg decodes it in memory to 16 kHz
mono; audio longer than ``max_audio_s`` is refused with 413. The fine-tuned Whisper runs through CTranslate2
(faster-whisper), window after 30-second window, each short window encoding only the audio it holds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import bentoml
import numpy as np
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from services.http import ERROR_RESPONSES, error_response, install_error_handlers, parse_uploads, read_body
from services.lifecycle import CommonArgs, ModelService
from services.metrics import observer, rejected
from services.security import ApiKeyMiddleware
from tasks import get_task
from tasks.audio import decode_audio
from tasks.images import InputError

TASK = get_task("asr")
RAW_TYPES = ("audio/", "video/webm", "video/mp4", "video/ogg", "application/octet-stream", "application/ogg")
SILENCE_PEAK = 1e-4  # -80 dBFS: nothing a microphone records as speech


class ServiceArgs(CommonArgs):
    """``bentoml serve services.asr:Asr --arg NAME=VALUE``."""

    model_tag: str = Field("asr:latest", description="store entry to serve (needs its ct2 export)")
    timeout_s: float = Field(600.0, gt=0, le=3600, description="a long recording takes minutes on a CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: Literal["auto", "float32", "int8", "float16", "int8_float16"] = Field(
        "auto", description="CTranslate2 precision; auto: float32 on a CPU, float16 on a GPU"
    )
    short_context: bool = Field(
        True, description="encode only the audio a window holds (faster), where the export validated it"
    )
    max_audio_s: float = Field(600.0, gt=0, le=24 * 3600, description="longest audio accepted, seconds")
    max_body_mb: float = Field(128.0, gt=0, le=4096)
    threads: int = Field(0, ge=0, description="CTranslate2 CPU threads (0: its default)")


ARGS = bentoml.use_arguments(ServiceArgs)


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


def _body_doc() -> dict:
    binary = {"type": "string", "format": "binary"}
    content = {
        "multipart/form-data": {"schema": {"type": "object", "required": ["audio"], "properties": {"audio": binary}}},
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["audio"],
                "properties": {"audio": {"type": "string", "description": "base64 audio file"}},
            }
        },
        "audio/*": {"schema": binary},
        "application/octet-stream": {"schema": binary},
    }
    return {"requestBody": {"required": True, "content": content}}


app = FastAPI(title="asr", description=TASK.description)
install_error_handlers(app)


@app.post(
    "/transcribe",
    response_model=TranscribeResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(),
    summary="Transcribe Korean speech",
)
async def transcribe(
    request: Request,
    word_timestamps: bool = Query(False, description="add start and end times of each word"),
) -> Response | BaseModel:
    return await bentoml.get_current_service().handle(request, word_timestamps)


@bentoml.service(
    name="asr", traffic={"timeout": ARGS.timeout_s}, workers=1, endpoints={"livez": "/livez", "readyz": "/readyz"}
)
@bentoml.asgi_app(app, path="/v1/asr")
class Asr(ModelService):
    """Whisper fine-tuned for Korean, served by CTranslate2 (faster-whisper)."""

    model_ref = bentoml.models.BentoModel(ARGS.model_tag)

    task = TASK.name

    def load(self) -> None:
        from tasks.audio import ffmpeg_path
        from tasks.speech import fast_model
        from tasks.store import entry_for_task, verified_file

        ffmpeg_path()  # fail at start, not at the first request, where ffmpeg is missing
        self.set_body_limit(ARGS.max_body_mb)  # uploads stay in memory: nothing a client sends is written to disk
        entry = entry_for_task(TASK.name, ARGS.model_tag)
        files = [name for name in entry.info.metadata.get("files", {}) if name.startswith("ct2/")]
        if not files:
            raise FileNotFoundError(f"{entry.tag} has no ct2 export: run `python -m exporters asr --format ct2`")
        paths = {name: verified_file(entry, name) for name in files}
        self.tag = str(entry.tag)
        # short contexts only where the export validated them for this model
        short = ARGS.short_context and bool(entry.info.metadata["export_ct2"].get("short_context"))
        self.model, self.backend = fast_model(
            paths["ct2/model.bin"].parent,
            TASK,
            ARGS.device,
            ARGS.compute_type,
            ARGS.threads,
            short,
        )
        self.observe = observer(TASK.name)
        self.run(np.zeros(TASK.sample_rate, np.float32), False)  # warm-up before reporting ready

    def run(self, audio: np.ndarray, words: bool) -> list[Segment]:
        """Transcribe (on a worker thread: CTranslate2 releases the GIL)."""
        from tasks.speech import fast_transcribe

        start = time.perf_counter()
        _, segments = fast_transcribe(self.model, audio, TASK.language, word_timestamps=words)
        self.observe(1, time.perf_counter() - start)
        return [
            Segment(
                start=round(s.start, 2),
                end=round(s.end, 2),
                text=s.text.strip(),
                words=[
                    Word(start=round(w.start, 2), end=round(w.end, 2), word=w.word, probability=round(w.probability, 3))
                    for w in s.words or []
                ]
                if words
                else None,
            )
            for s in segments
            if s.text.strip()
        ]

    async def handle(self, request: Request, word_timestamps: bool) -> Response | BaseModel:
        start = time.perf_counter()
        try:
            body = await read_body(request, self.body_limit)
            uploads, _ = await parse_uploads(request, body, "audio", False, 1, RAW_TYPES)
            audio = await asyncio.to_thread(decode_audio, uploads[0].data, ARGS.max_audio_s, TASK.sample_rate)
        except InputError as e:
            rejected(TASK.name, e.status)
            return error_response(e)
        silent = len(audio) == 0 or float(np.abs(audio).max()) < SILENCE_PEAK
        segments = [] if silent else await asyncio.to_thread(self.run, audio, word_timestamps)
        elapsed = time.perf_counter() - start
        duration = len(audio) / TASK.sample_rate
        return TranscribeResponse(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=TASK.language,
            duration_s=round(duration, 3),
            model=self.tag,
            backend=self.backend,
            elapsed_ms=round(elapsed * 1000, 3),
            rtf=round(elapsed / duration, 4) if duration else 0.0,
        )


Asr.add_asgi_middleware(ApiKeyMiddleware)  # optional API keys (services/security.py)
