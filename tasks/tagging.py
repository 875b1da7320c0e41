"""Token tagging every stage shares: text -> overlapping windows of token ids, per-token B / I / O probabilities
back to character spans, and keyphrases assembled from them (deduplicated by normalised form, scored, ranked).

Offsets are Python string indices into the original text (code points), so ``text[start:end]`` is the phrase,
whatever the script (Hangul, which the tokenizer splits into jamo, emoji, accents).
"""

from __future__ import annotations

import re
import unicodedata
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
    """Letters, digits and marks of any script, and the hyphen (ASCII: letters, digits, hyphen, as before)."""
    if c.isascii():
        return c.isalnum() or c == "-"
    return unicodedata.category(c)[0] in "LMN"


_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")


def _final(c: str) -> int | None:
    """Index of a Hangul syllable's final consonant (0: none, 8: ㄹ); None for any other character."""
    o = ord(c) - 0xAC00
    return o % 28 if 0 <= o < 11172 else None


def _words(words: str) -> tuple[str, ...]:
    return tuple(words.split())


# Josa and the copula, each with the sound it follows: C a final consonant, V a vowel, R a vowel or ㄹ (the 로
# family), Q a consonant other than ㄹ (the 으로 family), "" anything. The longest that fits wins.
_PARTICLES: dict[str, str] = {
    **dict.fromkeys(_words("이 은 을 과 이나 이란 이라는 이다 입니다 이며 이고 이었다 과는 과도 과의 과만"), "C"),
    **dict.fromkeys(_words("가 는 를 와 란 라는 였다 와는 와도 와의 와만"), "V"),
    **dict.fromkeys(_words("로 로서 로써 로부터 로는 로도 로의 로만"), "R"),
    **dict.fromkeys(_words("으로 으로서 으로써 으로부터 으로는 으로도 으로의 으로만"), "Q"),
    **dict.fromkeys(
        _words(
            "의 에 에서 에게 에게서 한테 께서 까지 부터 보다 처럼 마다 조차 만 만이 만을 만은 만의 에는 에도 에의 "
            "에만 에서는 에서도 에서의 에서만 에서부터 에게는 에게도 까지는 까지도 까지의 부터는 부터도 부터의 "
            "보다는 보다도"
        ),
        "",
    ),
}
# Bare 도 is left alone: it ends too many nouns (정확도, 유사도, 해상도, 속도, 온도). These are not split off a
# one-syllable stem: they end as many short nouns as they follow (결과, 회로, 길이, 추가, 의의, 비만).
_LONG_STEM = frozenset(_words("이 가 과 와 로 의 만 이나 란 라는 였다"))
# Nouns whose last syllables look like a particle or an ending (checked inside compounds too: 실험결과는).
_NOUNS = frozenset(
    _words(
        "결과 성과 효과 학과 신경과 정신과 외과 내과 어린이 고양이 원숭이 호랑이 주의 정의 회의 논의 합의 강의 "
        "추가 증가 평가 회로 미로 수로 경로 도로 길이 높이 깊이 넓이 놀이 먹이 비만 미만 저하 이하 지하 낙하 "
        "강하 권한 기한 제한 시한 상한 하한 유한 무한 최소한 최대한 결함 바다 라이다 레이다 소다 판다 아젠다"
    )
)
# Predicates built on a verbal noun (분할하는, 제안된, 이용한): the noun stays when the ending goes.
_VERBAL = sorted(  # longest first
    _words(
        "하는 하며 하고 하여 하기 하면 하지 하게 하다 한다 했다 하였다 합니다 해서 해야 한 함 되는 되며 되고 되어 "
        "되기 되면 되지 되다 된다 됐다 되었다 됩니다 될 됨 된 시키는 시킨 시키며 시킨다 시켰다 적인"
    ),
    key=len,
    reverse=True,
)
# Other predicates (보였다, 줄인다, 있는): the whole word goes.
_VERB = _words("었다 았다 였다 는다 인다 니다 있는 없는 있다 없다 있으며 같은")
# Words never part of a keyphrase: conjunctions, determiners, adverbs, postpositional verbs, bound nouns, common
# adnominal adjectives (높은 정확도: their 은 is not a particle), and a particle standing alone.
_FUNCTION = frozenset(
    _words(
        "및 등 또는 혹은 그리고 또한 즉 또 그러나 하지만 따라서 더 매우 가장 특히 이 그 저 본 각 모든 여러 해당 "
        "이러한 그러한 이런 그런 어떤 하는 한 된 되는 할 될 함 됨 있는 없는 있다 없다 같은 위한 통한 대한 관한 "
        "의한 인한 따른 향한 의해 위해 통해 대해 관해 따라 통하여 위하여 대하여 것 때 높은 낮은 작은 큰 많은 적은 "
        "넓은 좁은 깊은 좋은 새로운 다양한 다른 함께 널리 여전히 주로 크게 이미 아직 다시 더욱 모두 각각 서로 직접 "
        "점차"
    )
) | frozenset(_PARTICLES)


def _cuts_noun(word: str, cut: int) -> bool:
    """Whether ``word[:cut]`` would split one of the nouns above."""
    for noun in _NOUNS:
        i = word.find(noun)
        while i >= 0:
            if i < cut < i + len(noun):
                return True
            i = word.find(noun, i + 1)
    return False


def _agrees(stem: str, sound: str) -> bool:
    final = _final(stem[-1])
    if final is None or not sound:  # Latin, digits (CNN을, 3D로): the pronunciation is not known
        return True
    return {"C": final != 0, "V": final == 0, "R": final in (0, 8), "Q": final not in (0, 8)}[sound]


def korean_word(word: str) -> tuple[int, str]:
    """(length of the word's content, kind) of one eojeol (a whitespace- or punctuation-delimited word).

    kind: ``"function"`` (및, 등, 하는, 본, a particle alone: none of it is content), ``"particle"`` (a noun and a
    josa or the copula: 뇌종양이, 연구에서는, 기법이다), ``"verbal"`` (a verbal noun and a predicate ending:
    제안하며, 제안된, 이용한), ``"verb"`` (another predicate: 보였다, 있는), or ``"noun"`` (the whole word)."""
    if word in _FUNCTION:
        return 0, "function"
    if not _HANGUL.match(word[-1]):
        return len(word), "noun"
    for ending in _VERBAL:
        cut = len(word) - len(ending)
        if word.endswith(ending) and cut >= (2 if ending in ("하는", "한", "함") else 1) and not _cuts_noun(word, cut):
            return cut, "verbal"
    for particle in sorted((p for p in _PARTICLES if word.endswith(p)), key=len, reverse=True):
        cut = len(word) - len(particle)
        if cut < 1 or not _agrees(word[:cut], _PARTICLES[particle]) or _cuts_noun(word, cut):
            continue
        if particle in _LONG_STEM and cut < 2 and _final(word[cut - 1]) is not None:
            continue
        return cut, "particle"
    for ending in _VERB:
        if word.endswith(ending) and not _cuts_noun(word, len(word) - len(ending)):
            return len(word) - len(ending), "verb"
    if len(word) >= 2 and word[-1] == "다" and not _cuts_noun(word, len(word) - 1):
        return len(word) - 1, "verb"  # a sentence-final predicate: 나타낸다, 어렵다
    return len(word), "noun"


def _korean_bounds(text: str, start: int, end: int, first: int) -> tuple[int, int] | None:
    """[start, end) of whole words (snapped already) cut to a keyphrase: a predicate or function word at the end
    dropped, the last word's particle or ending left outside, leading words that are not bare nouns dropped.
    ``first`` is where the model's span began: a word it entered only in its particle belongs to the words
    before. None when nothing is left."""
    words: list[list[int]] = []  # [start, end) of each word
    for i in range(start, end):
        if _is_word_char(text[i]):
            if words and words[-1][1] == i:
                words[-1][1] = i + 1
            else:
                words.append([i, i + 1])
    kinds = [korean_word(text[a:b]) for a, b in words]
    if words and kinds[0][1] != "noun" and first >= words[0][0] + kinds[0][0]:
        del words[0], kinds[0]
    while words:
        a, (cut, kind) = words[-1][0], kinds[-1]
        if kind in ("function", "verb") or (kind != "noun" and text[a : a + cut] in _FUNCTION):
            del words[-1], kinds[-1]
        elif kind == "verbal" and len(words) > 1 and kinds[-2][1] != "noun":
            del words[-1], kinds[-1]  # 기법을 제안하며: the predicate of the words before, not a noun phrase
        else:
            words[-1][1] = a + cut
            break
    while len(words) > 1 and kinds[0][1] != "noun":
        del words[0], kinds[0]
    if not words:
        return None
    start, end = words[0][0], words[-1][1]
    phrase = text[start:end]
    for open_, close in ("()", "[]"):  # 신경망(CNN)을 -> 신경망(CNN), not 신경망(CNN
        if phrase.count(open_) > phrase.count(close) and text[end : end + 1] == close:
            end += 1
    return start, end


def spans(text: str, offsets: np.ndarray, probs: np.ndarray) -> list[Phrase]:
    """Spans from per-token probabilities: B opens a span, I continues it (an I after O opens one too); a token
    that is only a space is passed over, and a span of punctuation or emoji alone is no phrase.

    Whatever the tokenizer (WordPiece, jamo, sentencepiece with its leading spaces), a span is widened to whole
    words (letters, digits and marks of any script, hyphens), so it never starts or ends inside one. A span with
    Hangul is then cut to a noun phrase (see :func:`korean_word`): a trailing predicate or function word goes, the
    last word's josa, copula or predicate ending stays outside (뇌종양이 -> 뇌종양, 분할하는 -> 분할), and leading
    words that are not bare nouns go (연구에서는, 하는, 제안된, 및). Spans that share a word become one phrase.
    Offsets index the original text. Score: mean probability of the span's tokens being part of a keyphrase (B or
    I)."""
    labels = probs.argmax(1)
    found: list[tuple[int, int]] = []
    current: list[int] | None = None
    for i, label in enumerate(labels):
        if not text[offsets[i][0] : offsets[i][1]].strip():
            continue  # a space on its own (sentencepiece's lone "▁") neither opens, continues nor closes a span
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
    out: list[list] = []  # [start, end, token ranges]
    for a, b in found:
        start, end = int(offsets[a][0]), int(offsets[b][1])
        while start < end and text[start].isspace():  # sentencepiece offsets carry the word's leading space
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            continue
        first = start
        while start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
            start -= 1
        while end < len(text) and _is_word_char(text[end]) and _is_word_char(text[end - 1]):
            end += 1
        if not any(_is_word_char(c) for c in text[start:end]):
            continue  # punctuation or emoji alone
        if _HANGUL.search(text, start, end):
            bounds = _korean_bounds(text, start, end, first)
            if bounds is None:
                continue
            start, end = bounds
        if out and start < out[-1][1]:  # two spans in one word: one phrase
            out[-1][0], out[-1][1] = min(out[-1][0], start), max(out[-1][1], end)
            out[-1][2].append((a, b))
        else:
            out.append([start, end, [(a, b)]])
    phrases = []
    for start, end, ranges in out:
        tokens = np.concatenate([probs[a : b + 1] for a, b in ranges])
        phrases.append(Phrase(text[start:end], start, end, float((tokens[:, B] + tokens[:, I]).mean())))
    return phrases


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
