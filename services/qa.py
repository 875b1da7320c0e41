"""Question answering service: ``bentoml serve services.qa:Qa``.

``POST /v1/qa/answer`` takes JSON: ``{"question", "context"}``, ``{"questions": [...], "context"}`` (several
questions over one passage, tokenised once) or ``{"pairs": [{"question", "context"}, ...]}``, and answers each
question with the best span of its context (text, character offsets into the context as sent, score), the
``top_k`` candidates, and ``no_answer`` when the null answer beats every span. Contexts longer than a window run
through overlapping windows; the best span across them wins, each span once. The windows of concurrent requests
share model calls (adaptive batching, one batcher per window length bucket).
"""

from __future__ import annotations

from typing import Any

import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.pipeline import CommonArgs, Json, Options, Prepared, Route, make_service
from services.windows import WindowService
from tasks import answering
from tasks.images import Budget, InputError
from tasks.qa import QA as TASK
from tasks.tagging import pad

BUCKETS = tuple(range(32, TASK.max_length + 1, 32))  # window lengths a request is padded to (warm-up: the first)
MAX_QUESTION_CHARS = 1000


class ServiceArgs(CommonArgs):
    """``bentoml serve services.qa:Qa --arg NAME=VALUE``."""

    max_batch_size: int = Field(32, ge=1, le=512, description="windows per model call")
    max_context_chars: int = Field(20_000, ge=1, description="longest context accepted, characters (413 past it)")
    max_questions: int = Field(32, ge=1, description="questions (or pairs) in one request (413 past it)")
    max_windows: int = Field(256, ge=1, description="windows one request may become in all (413 past it)")


ARGS = bentoml.use_arguments(ServiceArgs)


def _question(text: str) -> str:
    if not text.strip():
        raise ValueError("a question may not be empty or only spaces")
    return text


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="what to find in `context`")
    context: str = Field(description="the passage the answer is a span of")

    @model_validator(mode="after")
    def _non_empty(self) -> Pair:
        _question(self.question)
        return self


class AskBody(BaseModel):
    """One of three forms: ``question`` + ``context``, ``questions`` + ``context``, or ``pairs``."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, min_length=1, max_length=MAX_QUESTION_CHARS, description="one question")
    questions: list[str] | None = Field(None, min_length=1, description="several questions about one `context`")
    context: str | None = Field(None, description="the passage the answers are spans of")
    pairs: list[Pair] | None = Field(None, min_length=1, description="questions each with its own context")

    @model_validator(mode="after")
    def _one_form(self) -> AskBody:
        forms = [self.question is not None, self.questions is not None, self.pairs is not None]
        if sum(forms) != 1:
            raise ValueError("send exactly one of: question (with context), questions (with context), pairs")
        if self.pairs is None and self.context is None:
            raise ValueError("a question needs a context")
        if self.pairs is not None and self.context is not None:
            raise ValueError("pairs carry their own contexts: send no context beside them")
        for q in [self.question] if self.question is not None else self.questions or []:
            if len(q) > MAX_QUESTION_CHARS:
                raise ValueError(f"a question of {len(q)} characters (at most {MAX_QUESTION_CHARS})")
            _question(q)
        return self

    def pairs_asked(self) -> list[tuple[str, str]]:
        if self.pairs is not None:
            return [(p.question, p.context) for p in self.pairs]
        questions = [self.question] if self.question is not None else list(self.questions or [])
        return [(q, self.context or "") for q in questions]


class AskOptions(Options):
    top_k: int = Field(1, ge=1, le=20, description="candidate spans per question, best first")
    null_threshold: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="no_answer when the null answer's logit beats the best span's by more than this "
        "(higher: answer more often; lower: abstain more often)",
    )


class Span(BaseModel):
    text: str = Field(description="context[start:end]")
    start: int = Field(description="character offset (code points) into the context as sent")
    end: int
    score: float = Field(description="probability of this start and end within the window that holds it")


class Result(BaseModel):
    question: str
    index: int = Field(description="position of this question (or pair) in the request")
    answer: Span | None = Field(description="the best span; null when no_answer")
    no_answer: bool = Field(description="the null answer beat every span: the context does not say")
    null_score: float = Field(description="probability of the null answer in its most confident window")
    candidates: list[Span] = Field(description="the top_k best spans, whatever no_answer says")
    n_windows: int = Field(description="windows the context became for this question")


class AnswerResponse(BaseModel):
    results: list[Result] = Field(description="one per question, in the order asked")
    model: str
    backend: str
    elapsed_ms: float


ANSWER = Route("/answer", "Answer questions with spans of their contexts", Json(AskBody), AskOptions, AnswerResponse)


class Reader(WindowService):
    """Span model (ONNX Runtime) over windows of question + context, with answer decoding across windows."""

    routes = (ANSWER,)
    runner_class = "exporters.qa:OnnxSpans"

    def run(self, x: np.ndarray) -> np.ndarray:
        """(N, 2, L) stacked ids and mask -> (N, 2, L) start and end logits."""
        start, end = self.runner(np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1]))
        return np.stack([start, end], 1)

    def prepare(self, route: Route, body: AskBody, options: AskOptions, budget: Budget) -> Prepared:
        """Each question's windows over its context (a context shared by several questions is tokenised once):
        (k, 2, L) ids and mask, L the bucket of the longest window."""
        asked = body.pairs_asked()
        args = self.args
        if len(asked) > args.max_questions:
            raise InputError(f"{len(asked)} questions in one request (at most {args.max_questions})", 413)
        contexts: dict[str, answering.ContextTokens] = {}
        encoded = []
        for question, context in asked:
            if len(context) > args.max_context_chars:
                raise InputError(f"a context of {len(context)} characters (at most {args.max_context_chars})", 413)
            if context not in contexts:
                contexts[context] = answering.tokenize_context(self.tokenizer, context)
            w = answering.encode(
                self.tokenizer, question, contexts[context], TASK.max_length, TASK.stride, TASK.max_question_tokens
            )
            encoded.append(w)
            if sum(len(e.ids) for e in encoded) > args.max_windows:
                raise InputError(f"the contexts make more than {args.max_windows} windows: send fewer or shorter", 413)
        windows = [ids for w in encoded for ids in w.ids]
        width = next(b for b in BUCKETS if b >= max(len(w) for w in windows))
        x = np.stack(pad(windows, self.tokenizer.pad_token_id, width), 1)
        return Prepared(x, size=len(x), cost=float(len(x) * width), state={"asked": asked, "encoded": encoded})

    def finish(self, route: Route, prepared: Prepared, out: np.ndarray, options: AskOptions) -> dict[str, Any]:
        results, row = [], 0
        for i, ((question, context), w) in enumerate(
            zip(prepared.state["asked"], prepared.state["encoded"], strict=True)
        ):
            logits = out[row : row + len(w.ids)]
            row += len(w.ids)
            pred = answering.decode(
                context,
                w.offsets,
                [lg[0, : len(ids)] for lg, ids in zip(logits, w.ids, strict=True)],
                [lg[1, : len(ids)] for lg, ids in zip(logits, w.ids, strict=True)],
                top_k=options.top_k,
                max_answer_tokens=TASK.max_answer_tokens,
                null_threshold=options.null_threshold,
            )
            spans = [Span(text=a.text, start=a.start, end=a.end, score=round(a.score, 4)) for a in pred.answers]
            results.append(
                Result(
                    question=question,
                    index=i,
                    answer=None if pred.no_answer else spans[0],
                    no_answer=pred.no_answer,
                    null_score=round(pred.null_score, 4),
                    candidates=spans,
                    n_windows=len(w.ids),
                )
            )
        return {"results": results}


Qa = make_service(Reader, TASK.name, TASK.description, ARGS)
