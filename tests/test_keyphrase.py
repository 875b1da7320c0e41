"""Keyphrase data, tagging and evaluation: the synthetic abstracts, the Inspec / SemEval-2017 reader, windows and
offsets through the real tokenizer (English, Korean, emoji), span assembly, deduplication, F1@k, and a short
fine-tuning run with YAKE and KeyBERT measured on the same documents."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tasks import tagging
from tasks.keyphrase import KEYPHRASE
from training.datasets.abstracts import _pools, generate, read_jsonl
from training.tagger import keyphrase_scores, load_base, prf_at, token_labels


@pytest.fixture(scope="module")
def tokenizer():
    return load_base(KEYPHRASE, None)[0]


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
