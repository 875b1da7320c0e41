"""The keyphrase service against a real ``bentoml serve``: a store entry built by the CLIs (MiniLM fine-tuned
briefly, ONNX export with its parity check), offsets that slice the text as sent (emoji and Hangul before the
phrases), top_k, batching, and every bad input as a 4xx."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from benchmarks.server import start_server, stop_server
from tests.conftest import entry_metadata
from training.datasets.abstracts import generate

pytestmark = pytest.mark.http
ROUTE = "/v1/keyphrase/extract"


@pytest.fixture(scope="module")
def client(keyphrase_store):
    proc, url, _ = start_server("keyphrase", {"max_chars": 5000}, env=keyphrase_store)
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c
    stop_server(proc)


@pytest.fixture(scope="module")
def english_docs():
    return [d for d in generate(30, seed=99, held_out=True) if d.language == "en"][:6]


def test_offsets_slice_the_text_as_sent(client, english_docs):
    for doc in english_docs:
        text = "🙂🧪 요약: " + doc.text + " 끝 🙂"  # emoji and Hangul before and after the phrases
        r = client.post(ROUTE, content=text.encode(), headers={"content-type": "text/plain; charset=utf-8"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["keyphrases"], body
        for k in body["keyphrases"]:
            assert text[k["start"] : k["end"]] == k["phrase"]
            assert 0 < k["score"] <= 1 and k["count"] >= 1
        assert body["model"].startswith("keyphrase:") and body["backend"] == "onnxruntime/cpu"


def test_the_tagger_finds_gold_keyphrases(client, english_docs):
    """Even one short epoch of fine-tuning finds most keyphrases of held-out English abstracts."""
    from training.tagger import keyphrase_scores

    found = [
        [k["phrase"] for k in client.post(ROUTE, json={"text": d.text}).json()["keyphrases"]] for d in english_docs
    ]
    assert keyphrase_scores(found, english_docs)["f1@M"] > 0.3


def test_korean_phrases_are_whole_words_with_particles_outside(client):
    """Korean abstracts (a hand-written clinical sentence, held-out generated ones): every phrase starts and ends
    at word boundaries, particles and endings left outside, offsets into the text as sent."""
    from tests.test_keyphrase import CLINICAL, ENGINEERING, word_bounded

    texts = [CLINICAL, ENGINEERING, *(d.text for d in generate(30, seed=99, held_out=True) if d.language == "ko")]
    found = 0
    for text in texts:
        r = client.post(ROUTE, content=text.encode(), headers={"content-type": "text/plain; charset=utf-8"})
        assert r.status_code == 200, r.text
        for k in r.json()["keyphrases"]:
            word_bounded(text, k["phrase"], k["start"], k["end"])
        found += len(r.json()["keyphrases"])
    assert found


def test_top_k_and_json_body(client, english_docs):
    text = english_docs[0].text
    all_of_them = client.post(ROUTE, json={"text": text}).json()["keyphrases"]
    two = client.post(ROUTE, json={"text": text, "top_k": 2}).json()["keyphrases"]
    assert two == all_of_them[:2]
    assert (
        client.post(ROUTE, params={"top_k": 1}, content=text, headers={"content-type": "text/plain"}).json()[
            "keyphrases"
        ]
        == all_of_them[:1]
    )


def test_concurrent_requests_get_what_they_would_alone(client, english_docs):
    texts = [d.text for d in english_docs] * 3
    alone = [client.post(ROUTE, json={"text": t}).json()["keyphrases"] for t in texts[:6]]
    with cf.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: client.post(ROUTE, json={"text": t}).json()["keyphrases"], texts))
    assert together == alone * 3


def test_empty_text_is_an_empty_list(client):
    for body in ({"json": {"text": ""}}, {"content": b"   \n", "headers": {"content-type": "text/plain"}}):
        r = client.post(ROUTE, **body)
        assert r.status_code == 200 and r.json()["keyphrases"] == [] and r.json()["n_tokens"] == 0


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"content": b"caf\xe9 \xff\xfe", "headers": {"content-type": "text/plain"}}, 400, "not valid UTF-8"),
        ({"content": "x" * 5001, "headers": {"content-type": "text/plain"}}, 413, "exceeds the limit of 5000"),
        ({"content": b"x" * 30000, "headers": {"content-type": "text/plain"}}, 413, "limit"),
        ({"content": b"hello", "headers": {"content-type": "image/png"}}, 415, "text/plain or application/json"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid JSON"),
        ({"json": {"txt": "hello"}}, 400, "'text'"),
        ({"json": {"text": 42}}, 400, "'text'"),
        ({"json": {"text": "hello", "top_k": 0}}, 422, "top_k"),
        ({"json": {"text": "hello", "top_k": "five"}}, 422, "top_k"),
        ({"json": {"text": "hello"}, "params": {"top_k": 1000}}, 422, "top_k"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, words):
    r = client.post(ROUTE, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_readiness_metrics_docs_and_store_entry(client, keyphrase_store):
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert {"text/plain", "application/json"} <= set(spec["paths"][ROUTE]["post"]["requestBody"]["content"])
    assert 'task="keyphrase"' in client.get("/metrics").text
    meta = entry_metadata(keyphrase_store, "keyphrase:latest")
    assert {"tagger", "yake", "keybert"} <= set(meta["metrics"]["test"])
    export = meta["export_onnx"]
    assert export["max_abs_diff"] <= export["atol"] and export["changed_labels"] == 0


def test_a_long_text_goes_through_overlapping_windows(client, english_docs):
    """About 4,500 characters (several 256-token windows, processed off the event loop): offsets still slice the
    text, and mentions repeated across the text are merged."""
    text = " ".join(d.text for d in english_docs * 3)[:4900]
    body = client.post(ROUTE, content=text, headers={"content-type": "text/plain"}).json()
    assert body["n_tokens"] > 3 * 256
    assert body["keyphrases"] and all(text[k["start"] : k["end"]] == k["phrase"] for k in body["keyphrases"])
    assert max(k["count"] for k in body["keyphrases"]) >= 3
