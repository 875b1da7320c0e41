"""Extractive question answering every stage shares: a question and a context -> windows of token ids (the
question, then a stretch of the context), start / end logits -> answer spans (the best across windows, or no
answer when the null span wins), and the scores (KorQuAD's official normalisation and SQuAD's).

Offsets are Python string indices (code points) into the context as given, so ``context[start:end]`` is the
answer whatever the script. A sentencepiece token often runs past the answer into a Korean particle (``1979년에``:
one token, answer ``1979년``): the span is cut back to the word's content (:func:`refine`), and never ends inside
a grapheme (a combining accent, an emoji sequence, decomposed Hangul).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

from tasks.tagging import _is_word_char, korean_word, window_starts


@dataclass
class Windows:
    """A question over a context as the model sees it: ``[CLS] question [SEP] context stretch [SEP]`` per window."""

    ids: list[np.ndarray]  # per window, (length,) int64
    offsets: list[np.ndarray]  # per window, (length, 2) int64: a context token's character offsets, -1 elsewhere


@dataclass(frozen=True)
class ContextTokens:
    """A context tokenised once, shared by every question asked of it."""

    ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) int64


def tokenize_context(tokenizer, context: str) -> ContextTokens:
    enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return ContextTokens(
        np.asarray(enc["input_ids"], np.int64), np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
    )


def encode(
    tokenizer,
    question: str,
    context: str | ContextTokens,
    max_length: int,
    stride: int,
    max_question_tokens: int = 64,
) -> Windows:
    """Windows of at most ``max_length`` tokens over the context, consecutive ones sharing ``stride`` context
    tokens; the question is cut to ``max_question_tokens``."""
    ctx = tokenize_context(tokenizer, context) if isinstance(context, str) else context
    q = tokenizer(question, add_special_tokens=False, verbose=False)["input_ids"][:max_question_tokens]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    width = max_length - len(q) - 3
    if width < 8:
        raise ValueError(f"max_length {max_length} leaves {width} context tokens beside a {len(q)}-token question")
    head = np.asarray([cls, *q, sep], np.int64)
    ids, offsets = [], []
    for s in window_starts(len(ctx.ids), width, min(stride, width - 1)):
        part = ctx.ids[s : s + width]
        ids.append(np.concatenate([head, part, [sep]]).astype(np.int64))
        off = np.full((len(head) + len(part) + 1, 2), -1, np.int64)
        off[len(head) : len(head) + len(part)] = ctx.offsets[s : s + width]
        offsets.append(off)
    return Windows(ids, offsets)


def answer_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """(start, end) token positions of the character span ``[start, end)`` in one window: the tokens holding its
    first and last characters; (0, 0) (the [CLS] token: no answer here) when the window does not hold it whole."""
    inside = offsets[:, 0] >= 0
    if not inside.any() or start < offsets[inside, 0].min() or end > offsets[inside, 1].max():
        return 0, 0
    first = np.nonzero(inside & (offsets[:, 1] > start))[0]
    last = np.nonzero(inside & (offsets[:, 0] < end))[0]
    if not len(first) or not len(last) or first[0] > last[-1]:
        return 0, 0
    return int(first[0]), int(last[-1])


_JAMO_TAIL = re.compile("[\u1160-\u11ff\ud7b0-\ud7ff]")  # medial vowels and final consonants of decomposed Hangul


def _continues(c: str) -> bool:
    """Whether ``c`` continues the character before it (a combining mark, a variation selector, a skin-tone
    modifier, a decomposed Hangul vowel or final)."""
    return bool(
        unicodedata.combining(c)
        or unicodedata.category(c) in ("Mn", "Me")
        or _JAMO_TAIL.match(c)
        or "\ufe00" <= c <= "\ufe0f"
        or "\U0001f3fb" <= c <= "\U0001f3ff"
    )


def _grapheme_end(text: str, end: int) -> int:
    """``end`` moved past whatever continues the character before it, and past a zero-width joiner with the
    character it joins (emoji sequences)."""
    while end < len(text):
        if _continues(text[end]):
            end += 1
        elif text[end] == "\u200d" and end + 1 < len(text):
            end += 2
        else:
            break
    return end


def refine(context: str, start: int, end: int) -> tuple[int, int]:
    """A token span cut to an answer: spaces trimmed, a Korean particle or copula that ends the last word left
    outside (``1979년에`` -> ``1979년``, ``정윤진이다`` -> ``정윤진``), the end moved past an unfinished grapheme."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    if end > start and _is_word_char(context[end - 1]) and (end == len(context) or not _is_word_char(context[end])):
        word_start = end
        while word_start > start and _is_word_char(context[word_start - 1]):
            word_start -= 1
        cut, kind = korean_word(context[word_start:end])
        if kind == "particle" and word_start + cut > start:
            end = word_start + cut
    return start, _grapheme_end(context, end)


@dataclass(frozen=True)
class Span:
    text: str
    start: int
    end: int
    score: float  # probability of this start and end within its window (start prob x end prob)
    logit: float  # start logit + end logit: what spans (and the null answer) are ranked by


@dataclass(frozen=True)
class Prediction:
    answers: tuple[Span, ...]  # best first, distinct character spans
    no_answer: bool  # the null answer beat the best span (by more than the threshold)
    null_logit: float  # the null answer's logit ([CLS] start + end), the lowest over windows
    null_score: float  # its probability in that window


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def decode(
    context: str,
    offsets: list[np.ndarray],
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    top_k: int = 1,
    max_answer_tokens: int = 30,
    n_best: int = 20,
    null_threshold: float = 0.0,
) -> Prediction:
    """The best ``top_k`` answers over all windows of one question (per window ``(length,)`` start and end
    logits). Spans run from a context token to a later one within ``max_answer_tokens``; the ``n_best`` highest
    starts and ends of each window are paired; windows that overlap propose the same span once, at its best."""
    best: dict[tuple[int, int], Span] = {}
    null_logit, null_score = float("inf"), 0.0
    for off, sl, el in zip(offsets, start_logits, end_logits, strict=True):
        sl, el = np.asarray(sl, np.float64)[: len(off)], np.asarray(el, np.float64)[: len(off)]
        inside = np.nonzero(off[:, 0] >= 0)[0]
        if not len(inside):
            continue
        keep = np.concatenate([[0], inside])  # [CLS] and the context: the question is never an answer
        ps, pe = np.zeros(len(off)), np.zeros(len(off))
        ps[keep], pe[keep] = _softmax(sl[keep]), _softmax(el[keep])
        if sl[0] + el[0] < null_logit:
            null_logit, null_score = float(sl[0] + el[0]), float(ps[0] * pe[0])
        starts = inside[np.argsort(-sl[inside], kind="stable")[:n_best]]
        ends = inside[np.argsort(-el[inside], kind="stable")[:n_best]]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_tokens:
                    continue
                a, b = refine(context, int(off[s, 0]), int(off[e, 1]))
                if b <= a:
                    continue
                span = Span(context[a:b], a, b, float(ps[s] * pe[e]), float(sl[s] + el[e]))
                if (a, b) not in best or span.logit > best[(a, b)].logit:
                    best[(a, b)] = span
    ranked = sorted(best.values(), key=lambda sp: (-sp.logit, sp.start))[:top_k]
    if null_logit == float("inf"):
        null_logit = 0.0
    no_answer = not ranked or null_logit > ranked[0].logit + null_threshold
    return Prediction(tuple(ranked), no_answer, null_logit, null_score)


# ---- scores -----------------------------------------------------------------------------------------------------

_KORQUAD_REMOVE = re.compile("['\"《》<>〈〉()‘’]")
_PUNCTUATION = frozenset(string.punctuation)


def normalise_korquad(text: str) -> str:
    """KorQuAD 1.0's official normalisation: quotes, brackets and angle quotes to spaces, lower case, ASCII
    punctuation removed, runs of spaces collapsed (no article stripping)."""
    text = _KORQUAD_REMOVE.sub(" ", text).lower()
    return " ".join("".join(c for c in text if c not in _PUNCTUATION).split())


def normalise_squad(text: str) -> str:
    """SQuAD v1.1's: lower case, punctuation and the English articles removed, spaces collapsed."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(pred: list[str], gold: list[str]) -> float:
    same = sum((Counter(pred) & Counter(gold)).values())
    if not same:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def korquad_f1(prediction: str, gold: str) -> float:
    """KorQuAD's F1: over the characters of the normalised answers, spaces ignored."""
    return _f1(list(normalise_korquad(prediction).replace(" ", "")), list(normalise_korquad(gold).replace(" ", "")))


def squad_f1(prediction: str, gold: str) -> float:
    """SQuAD's F1: over the whitespace tokens of the normalised answers."""
    return _f1(normalise_squad(prediction).split(), normalise_squad(gold).split())


def scores(predictions: list[str | None], golds: list[list[str]]) -> dict[str, float]:
    """EM and F1 in percent, KorQuAD's and SQuAD's, the best over each question's gold answers. A question with no
    gold answer is right only when the prediction is ``None`` (no answer), and a ``None`` prediction of an
    answerable question scores 0 (SQuAD v2.0's convention)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = f1 = s_em = s_f1 = 0.0
    has = [bool(g) for g in golds]
    right_has = right_none = 0.0
    for p, g in zip(predictions, golds, strict=True):
        if not g or p is None:
            hit = float(not g and p is None)
            em, f1, s_em, s_f1 = em + hit, f1 + hit, s_em + hit, s_f1 + hit
            right_none += hit if not g else 0.0
            continue
        e = max(float(normalise_korquad(p) == normalise_korquad(x)) for x in g)
        em += e
        right_has += e
        f1 += max(korquad_f1(p, x) for x in g)
        s_em += max(float(normalise_squad(p) == normalise_squad(x)) for x in g)
        s_f1 += max(squad_f1(p, x) for x in g)
    n = max(len(golds), 1)
    n_has, n_none = sum(has), len(has) - sum(has)
    return {
        "n": len(golds),
        "exact_match": 100 * em / n,
        "f1": 100 * f1 / n,
        "squad_exact_match": 100 * s_em / n,
        "squad_f1": 100 * s_f1 / n,
        "has_answer_exact_match": 100 * right_has / n_has if n_has else float("nan"),
        "no_answer_accuracy": 100 * right_none / n_none if n_none else float("nan"),
    }
