"""Keyphrase extraction service: ``bentoml serve services.keyphrase:Keyphrase``.

``POST /v1/keyphrase/extract`` takes UTF-8 text (``text/plain``) or JSON ``{"text": ..., "top_k": ...}`` and answers
the ranked keyphrases with character offsets into the text as sent, scores and the model tag. Long texts run
through overlapping windows; the windows of concurrent requests share model calls (adaptive batching, one
batcher per window length bucket).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

import bentoml
import numpy as np
from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from services.batching import AdaptiveBatcher
from services.http import ERROR_RESPONSES, error_response, install_error_handlers, read_body
from services.lifecycle import CommonArgs, ModelService
from services.metrics import observer, rejected
from services.security import ApiKeyMiddleware
from tasks import get_task, tagging
from tasks.images import InputError

TASK = get_task("keyphrase")
LONG_TEXT = 2_000  # characters
BUCKETS = tuple(range(32, 257, 32))  # window lengths a request is padded to: at most 31 padding tokens


class ServiceArgs(CommonArgs):
    """``bentoml serve services.keyphrase:Keyphrase --arg NAME=VALUE``."""

    model_tag: str = Field("keyphrase:latest", description="store entry to serve (needs its ONNX export)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batching: bool = Field(True, description="adaptive batching across concurrent requests")
    max_batch_size: int = Field(32, ge=1, le=512, description="windows per model call")
    max_delay_ms: float = Field(0.0, ge=0, le=1000)
    max_chars: int = Field(100_000, ge=1, description="longest text accepted, characters (413 past it)")
    threads: int = Field(0, ge=0)


ARGS = bentoml.use_arguments(ServiceArgs)


class Phrase(BaseModel):
    phrase: str = Field(description="the text at [start, end) of the input")
    start: int = Field(description="character offset (code points) of the first mention")
    end: int
    score: float = Field(description="mean probability of the phrase's tokens being part of a keyphrase")
    count: int = Field(description="mentions merged into this phrase (same normalised form)")


class ExtractResponse(BaseModel):
    keyphrases: list[Phrase] = Field(description="best first; empty for an empty text")
    n_tokens: int = Field(description="tokens the text became")
    model: str
    backend: str
    elapsed_ms: float


app = FastAPI(title="keyphrase", description=TASK.description)
install_error_handlers(app)

BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1}},
                }
            },
        },
    }
}


@app.post(
    "/extract",
    response_model=ExtractResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=BODY_DOC,
    summary="Extract ranked keyphrases with character offsets",
)
async def extract(
    request: Request, top_k: int = Query(10, ge=1, le=100, description="keyphrases to return")
) -> Response | BaseModel:
    return await bentoml.get_current_service().handle(request, top_k)


@bentoml.service(
    name="keyphrase", traffic={"timeout": ARGS.timeout_s}, workers=1, endpoints={"livez": "/livez", "readyz": "/readyz"}
)
@bentoml.asgi_app(app, path="/v1/keyphrase")
class Keyphrase(ModelService):
    """BERT-like token tagger (ONNX Runtime) with span assembly, deduplication and ranking."""

    model_ref = bentoml.models.BentoModel(ARGS.model_tag)

    task = TASK.name

    def load(self) -> None:
        from transformers import AutoTokenizer

        from exporters.tagger import OnnxTagger
        from tasks.store import entry_for_task, verified_file

        entry = entry_for_task(TASK.name, ARGS.model_tag)
        files = entry.info.metadata.get("files", {})
        if "model.onnx" not in files:
            raise FileNotFoundError(
                f"{entry.tag} has no ONNX export: run `python -m exporters keyphrase --format onnx`"
            )
        paths = {name: verified_file(entry, name) for name in files}  # every file, tokenizer's too
        self.tag = str(entry.tag)
        self.tokenizer = AutoTokenizer.from_pretrained(str(entry.path))
        self.runner = OnnxTagger(paths["model.onnx"], ARGS.device, ARGS.threads)
        self.backend = f"{self.runner.name}/{self.runner.device}"
        size = ARGS.max_batch_size if ARGS.batching else 1
        delay = ARGS.max_delay_ms if ARGS.batching else 0.0
        self.batchers = {n: AdaptiveBatcher(self.run, size, delay, observer(TASK.name)) for n in BUCKETS}
        self.run(np.ones((1, 2, BUCKETS[0]), np.int64))  # warm-up before reporting ready
        tagging.normalise("warm-up")  # loads the stemmer now, not on the first request

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        for batcher in getattr(self, "batchers", {}).values():
            batcher.close()

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 2, L) stacked ids and mask -> (N, L, 3) probabilities."""
        return self.runner(np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1]))

    async def handle(self, request: Request, top_k: int) -> Response | BaseModel:
        start = time.perf_counter()
        try:
            text, top_k = await self.parse(request, top_k)
        except InputError as e:
            rejected(TASK.name, e.status)
            return error_response(e)
        phrases, n_tokens = [], 0
        if text.strip():
            # tokenising and assembling a long text takes milliseconds: off the event loop then
            off_loop = len(text) > LONG_TEXT
            enc = await asyncio.to_thread(self.encode, text) if off_loop else self.encode(text)
            n_tokens = len(enc.offsets)
            width = next(b for b in BUCKETS if b >= max(len(w) for w in enc.ids))
            probs = await self.batchers[width](np.stack(tagging.pad(enc.ids, self.tokenizer.pad_token_id, width), 1))
            args = (text, enc, probs, top_k)
            phrases = await asyncio.to_thread(self.assemble, *args) if off_loop else self.assemble(*args)
        return ExtractResponse(
            keyphrases=[
                Phrase(phrase=p.text, start=p.start, end=p.end, score=round(p.score, 4), count=p.count) for p in phrases
            ],
            n_tokens=n_tokens,
            model=self.tag,
            backend=self.backend,
            elapsed_ms=round((time.perf_counter() - start) * 1000, 3),
        )

    def encode(self, text: str) -> tagging.Encoded:
        return tagging.encode(self.tokenizer, text, TASK.max_length, TASK.stride)

    @staticmethod
    def assemble(text: str, enc: tagging.Encoded, probs: np.ndarray, top_k: int) -> list[tagging.Phrase]:
        merged = tagging.merge_windows(enc, [p[: len(w)] for p, w in zip(probs, enc.ids, strict=True)])
        return tagging.rank(tagging.spans(text, enc.offsets, merged), top_k)

    async def parse(self, request: Request, top_k: int) -> tuple[str, int]:
        """The text and top_k of a ``text/plain`` or JSON body, with 4xx for what cannot be used."""
        body = await read_body(request, ARGS.max_chars * 4 + 4096)  # UTF-8: at most 4 bytes a character
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("text/plain", "application/json"):
            raise InputError(
                f"unsupported content type {ctype or '(none)'!r}: send text/plain or application/json", 415
            )
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"the body is not valid UTF-8 (byte {e.start})", 400) from e
        if ctype == "application/json":
            try:
                doc = json.loads(decoded)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON body: {e}", 400) from e
            if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                raise InputError("JSON body must be an object with a string 'text' field", 400)
            value = doc.get("top_k", top_k)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise InputError("top_k must be a whole number from 1 to 100", 422)
            decoded, top_k = doc["text"], value
        if len(decoded) > ARGS.max_chars:
            raise InputError(f"text of {len(decoded)} characters exceeds the limit of {ARGS.max_chars}", 413)
        return decoded, top_k


Keyphrase.add_asgi_middleware(ApiKeyMiddleware)  # optional API keys (services/security.py)
