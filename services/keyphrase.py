"""Keyphrase extraction service: ``bentoml serve services.keyphrase:Keyphrase``.

``POST /v1/keyphrase/extract`` takes UTF-8 text (``text/plain``) or JSON ``{"text": ..., "top_k": ...}`` and answers
the ranked keyphrases with character offsets into the text as sent, scores and the model tag. Long texts run
through overlapping windows; the windows of concurrent requests share model calls (adaptive batching, one
batcher per window length bucket).
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from pydantic import BaseModel, Field

from services.pipeline import CommonArgs, Options, Prepared, Route, Text, make_service
from services.windows import WindowService
from tasks import get_task, tagging
from tasks.images import Budget, InputError

TASK = get_task("keyphrase")
BUCKETS = tuple(range(32, 257, 32))  # window lengths a request is padded to: at most 31 padding tokens


class ServiceArgs(CommonArgs):
    """``bentoml serve services.keyphrase:Keyphrase --arg NAME=VALUE``."""

    max_batch_size: int = Field(32, ge=1, le=512, description="windows per model call")
    max_chars: int = Field(100_000, ge=1, description="longest text accepted, characters (413 past it)")


ARGS = bentoml.use_arguments(ServiceArgs)


class ExtractOptions(Options):
    top_k: int = Field(10, ge=1, le=100, description="keyphrases to return")


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


EXTRACT = Route("/extract", "Extract ranked keyphrases with character offsets", Text(), ExtractOptions, ExtractResponse)


class Tagger(WindowService):
    """BERT-like token tagger (ONNX Runtime) with span assembly, deduplication and ranking."""

    routes = (EXTRACT,)
    runner_class = "exporters.tagger:OnnxTagger"

    def warm_up(self) -> None:
        super().warm_up()
        tagging.normalise("warm-up")  # loads the stemmer now, not on the first request

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 2, L) stacked ids and mask -> (N, L, 3) probabilities."""
        return self.runner(np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1]))

    def max_text_bytes(self) -> int:
        return self.args.max_chars * 4 + 4096  # UTF-8: at most 4 bytes a character, and a JSON wrapper

    def prepare(self, route: Route, text: str, options: ExtractOptions, budget: Budget) -> Prepared:
        """Tokenise into overlapping windows: (k, 2, L) ids and mask, L the bucket of the longest window."""
        if len(text) > self.args.max_chars:
            raise InputError(f"text of {len(text)} characters exceeds the limit of {self.args.max_chars}", 413)
        if not text.strip():
            return Prepared(None, size=0, state={"text": text, "enc": None})
        enc = tagging.encode(self.tokenizer, text, TASK.max_length, TASK.stride)
        width = next(b for b in BUCKETS if b >= max(len(w) for w in enc.ids))
        x = np.stack(tagging.pad(enc.ids, self.tokenizer.pad_token_id, width), 1)
        return Prepared(x, size=len(x), cost=float(x.shape[0] * width), state={"text": text, "enc": enc})

    def finish(self, route: Route, prepared: Prepared, probs, options: ExtractOptions) -> dict[str, Any]:
        text, enc = prepared.state["text"], prepared.state["enc"]
        if enc is None:
            return {"keyphrases": [], "n_tokens": 0}
        merged = tagging.merge_windows(enc, [p[: len(w)] for p, w in zip(probs, enc.ids, strict=True)])
        phrases = tagging.rank(tagging.spans(text, enc.offsets, merged), options.top_k)
        return {
            "keyphrases": [
                Phrase(phrase=p.text, start=p.start, end=p.end, score=round(p.score, 4), count=p.count) for p in phrases
            ],
            "n_tokens": len(enc.offsets),
        }


Keyphrase = make_service(Tagger, TASK.name, TASK.description, ARGS)
