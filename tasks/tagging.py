"""Token tagging every stage shares: text -> overlapping windows of token ids, per-token B / I / O probabilities
back to character spans, and keyphrases assembled from them (deduplicated by normalised form, scored, ranked).

Offsets are Python string indices into the original text (code points), so ``text[start:end]`` is the phrase,
whatever the script (Hangul, which the tokenizer splits into jamo, emoji, accents).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

O, B, I = 0, 1, 2  # noqa: E741 - the BIO scheme's own letters


@dataclass
class Encoded:
    """A text as the model sees it: windows of token ids (each with [CLS] / [SEP]) and each token's offsets."""

    ids: list[np.ndarray]  # per window, (length,) int64 including [CLS] and [SEP]
    starts: list[int]  # first content token of each window, in text tokens
    offsets: np.ndarray  # (n_tokens, 2) character offsets of the text's tokens


def window_starts(n_tokens: int, width: int, stride: int) -> list[int]:
    """Starts of windows of ``width`` content tokens that cover ``n_tokens``, consecutive ones sharing
    ``stride`` tokens (the last window ends at the last token)."""
    if n_tokens <= width:
        return [0]
    step = width - stride
    starts = list(range(0, n_tokens - width, step))
    return [*starts, n_tokens - width]


def encode(tokenizer, text: str, max_length: int, stride: int) -> Encoded:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)  # windows follow
    ids = np.asarray(enc["input_ids"], np.int64)
    offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
    width = max_length - 2
    starts = window_starts(len(ids), width, stride)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = [np.concatenate([[cls], ids[s : s + width], [sep]]).astype(np.int64) for s in starts]
    return Encoded(windows, starts, offsets)


def pad(windows: list[np.ndarray], pad_id: int = 0, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, L) input ids and attention mask for windows of different lengths; L is the longest window's length
    unless ``width`` is given."""
    width = width or max(len(w) for w in windows)
    ids = np.full((len(windows), width), pad_id, np.int64)
    mask = np.zeros((len(windows), width), np.int64)
    for i, w in enumerate(windows):
        ids[i, : len(w)] = w
        mask[i, : len(w)] = 1
    return ids, mask


def merge_windows(enc: Encoded, window_probs: list[np.ndarray]) -> np.ndarray:
    """Per-window (length, 3) probabilities (with [CLS] / [SEP] rows) -> (n_tokens, 3), averaged where windows
    overlap."""
    total = np.zeros((len(enc.offsets), 3), np.float64)
    count = np.zeros(len(enc.offsets), np.float64)
    for start, probs in zip(enc.starts, window_probs, strict=True):
        content = probs[1 : len(probs) - 1]
        total[start : start + len(content)] += content
        count[start : start + len(content)] += 1
    return (total / np.maximum(count, 1)[:, None]).astype(np.float32)


@dataclass
class Phrase:
    text: str
    start: int
    end: int
    score: float
    count: int = 1  # mentions merged into this phrase


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


def spans(text: str, offsets: np.ndarray, probs: np.ndarray) -> list[Phrase]:
    """Spans from per-token probabilities: B opens a span, I continues it (an I after O opens one too). A span
    that cuts a Latin word is widened to the whole word (subword tokens); Korean particles stay outside.
    Score: mean probability of the span's tokens being part of a keyphrase (B or I)."""
    labels = probs.argmax(1)
    found: list[tuple[int, int]] = []
    current: list[int] | None = None
    for i, label in enumerate(labels):
        if label == B or (label == I and current is None):
            if current:
                found.append((current[0], current[1]))
            current = [i, i]
        elif label == I:
            current[1] = i
        elif current:
            found.append((current[0], current[1]))
            current = None
    if current:
        found.append((current[0], current[1]))
    out = []
    for a, b in found:
        start, end = int(offsets[a][0]), int(offsets[b][1])
        while start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
            start -= 1
        while end < len(text) and _is_word_char(text[end]) and _is_word_char(text[end - 1]):
            end += 1
        phrase = text[start:end].strip()
        if phrase:
            score = float((probs[a : b + 1, B] + probs[a : b + 1, I]).mean())
            out.append(Phrase(phrase, start, end, score))
    return out


def normalise(phrase: str, stem: bool = True) -> str:
    """Lower case, words only, each English word Porter-stemmed (the standard keyphrase protocol)."""
    words = re.findall(r"[\w-]+", phrase.lower())
    if stem:
        from nltk.stem.porter import PorterStemmer

        stemmer = PorterStemmer()
        words = [stemmer.stem(w) if w.isascii() else w for w in words]
    return " ".join(words)


def rank(phrases: list[Phrase], top_k: int | None = None) -> list[Phrase]:
    """Deduplicate by normalised form (the first mention's offsets, the best score, the number of mentions),
    then rank by score."""
    best: dict[str, Phrase] = {}
    for p in phrases:
        key = normalise(p.text)
        if key in best:
            kept = best[key]
            kept.count += 1
            kept.score = max(kept.score, p.score)
        else:
            best[key] = Phrase(p.text, p.start, p.end, p.score)
    ranked = sorted(best.values(), key=lambda p: (-p.score, p.start))
    return ranked if top_k is None else ranked[:top_k]
