"""The question-answering service (services/qa.py) in process: its real prepare / run / finish on a tiny random
span model exported to ONNX, behind the shared pipeline (ASGI transport, no server): the three request forms,
offsets that index the context as sent through windows, answers equal to decoding the model's own logits,
concurrent requests each with their own answer, and a 4xx with a message for every bad input."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from tasks import answering
from training.datasets import reading

UNICODE = "😀 아침에 cafe\u0301에서 👍🏽 표시를 받고 👩\u200d👩\u200d👧과 함께 서울에서 만났다."


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from exporters import qa as qa_export
    from tasks.qa import QA
    from training import e5
    from training.qa import SpanModel

    tokenizer = AutoTokenizer.from_pretrained(e5.load_folder())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    path = tmp_path_factory.mktemp("qa") / "model.onnx"
    qa_export.export_onnx(SpanModel(BertModel(config, add_pooling_layer=False), "gru").eval(), QA, "qa:test", path)
    return tokenizer, path


def reader(onnx_model, **args):
    from exporters.qa import OnnxSpans
    from services.qa import Reader, ServiceArgs

    tokenizer, path = onnx_model

    class Local(Reader):
        task = "qa"

        def __init__(self) -> None:
            self.args = ServiceArgs(**args)
            self.set_body_limit(self.args.max_body_mb)
            self.tag, self.threads = "qa:test", 1
            self.tokenizer, self.runner = tokenizer, OnnxSpans(path)
            self.backend_name = "onnxruntime/cpu"
            self.start_pipeline()
            self.serve_self()

    return Local()


def client_for(service) -> httpx.AsyncClient:
    from services.pipeline import make_app
    from services.qa import ANSWER

    app = make_app("qa", "question answering", (ANSWER,), current=lambda: service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=60)


def ask(service, *bodies, **kwargs) -> list[httpx.Response]:
    async def main():
        async with client_for(service) as c:
            return await asyncio.gather(*(c.post("/answer", **({"json": b} | kwargs)) for b in bodies))

    return asyncio.run(main())


def expected(onnx_model, question: str, context: str, top_k: int = 1) -> answering.Prediction:
    """What decoding the ONNX model's own logits, window by window, gives."""
    from exporters.qa import OnnxSpans
    from tasks.qa import QA
    from tasks.tagging import pad

    tokenizer, path = onnx_model
    w = answering.encode(tokenizer, question, context, QA.max_length, QA.stride, QA.max_question_tokens)
    runner = OnnxSpans(path)
    starts, ends = [], []
    for ids in w.ids:
        s, e = runner(*pad([ids], tokenizer.pad_token_id))
        starts.append(s[0])
        ends.append(e[0])
    return answering.decode(context, w.offsets, starts, ends, top_k=top_k, max_answer_tokens=QA.max_answer_tokens)


def test_every_form_answers_with_offsets_into_the_context_as_sent(onnx_model):
    service = reader(onnx_model)
    passages = reading.generate(3, seed=4, held_out=True)
    long = " ".join(p.context for p in reading.generate(12, seed=5)) + " " + UNICODE  # several windows
    one, many, pairs = ask(
        service,
        {"question": "어디에서 만났나?", "context": UNICODE, "top_k": 3},
        {"questions": [q.question for q in passages[0].questions] + ["무엇을 받았나?"], "context": long},
        {"pairs": [{"question": q.question, "context": p.context} for p in passages for q in p.questions]},
    )
    assert [r.status_code for r in (one, many, pairs)] == [200] * 3, one.text
    sent = [
        [UNICODE],
        [long] * (len(passages[0].questions) + 1),
        [p.context for p in passages for _ in p.questions],
    ]
    for response, contexts in zip((one, many, pairs), sent, strict=True):
        doc = response.json()
        assert doc["model"] == "qa:test" and [r["index"] for r in doc["results"]] == list(range(len(contexts)))
        for result, context in zip(doc["results"], contexts, strict=True):
            for span in result["candidates"] + ([result["answer"]] if result["answer"] else []):
                assert context[span["start"] : span["end"]] == span["text"] != ""
            assert result["no_answer"] == (result["answer"] is None)
    assert len(one.json()["results"][0]["candidates"]) == 3
    assert all(r["n_windows"] > 1 for r in many.json()["results"])


def test_the_service_answers_what_decoding_the_model_gives(onnx_model):
    service = reader(onnx_model)
    passage = reading.generate(1, seed=9, held_out=True)[0]
    questions = [q.question for q in passage.questions]
    (response,) = ask(service, {"questions": questions, "context": passage.context, "top_k": 2})
    for question, result in zip(questions, response.json()["results"], strict=True):
        want = expected(onnx_model, question, passage.context, top_k=2)
        assert [(c["start"], c["end"]) for c in result["candidates"]] == [(a.start, a.end) for a in want.answers]
        assert result["no_answer"] == want.no_answer


def test_concurrent_requests_each_get_their_own_answer(onnx_model):
    service = reader(onnx_model)
    passages = reading.generate(16, seed=12)
    bodies = [{"question": p.questions[0].question, "context": p.context, "top_k": 2} for p in passages]
    alone = [ask(service, b)[0].json()["results"][0]["candidates"] for b in bodies]
    together = [r.json()["results"][0]["candidates"] for r in ask(service, *bodies)]
    assert together == alone


def test_every_bad_request_is_a_4xx_that_says_what_was_wrong(onnx_model):
    service = reader(onnx_model, max_context_chars=500, max_questions=4, max_windows=3)
    ok = {"question": "어디에 있나?", "context": "한빛 병원은 서울에 있다."}
    cases = [
        ({"question": "", "context": "x"}, 422, "question"),
        ({"question": "   ", "context": "x"}, 422, "empty"),
        ({"question": "q"}, 422, "needs a context"),
        ({"question": "q", "questions": ["r"], "context": "x"}, 422, "exactly one"),
        ({"pairs": [{"question": "q", "context": "x"}], "context": "x"}, 422, "own contexts"),
        ({"question": 5, "context": "x"}, 422, "question"),
        ({"question": "q", "context": ["x"]}, 422, "context"),
        ({**ok, "top_k": 0}, 422, "top_k"),
        ({**ok, "colour": "red"}, 422, "unknown field"),
        ({"question": "q", "context": "가" * 501}, 413, "at most 500"),
        ({"questions": ["q"] * 5, "context": "x"}, 413, "at most 4"),
        ({"questions": ["q"] * 4, "context": "x"}, 413, "windows"),  # a window each: 4 of at most 3
        ({"question": "q" * 1001, "context": "x"}, 422, "question"),
        ({"pairs": []}, 422, "pairs"),
    ]
    responses = ask(service, *[body for body, _, _ in cases])
    for (body, status, words), r in zip(cases, responses, strict=True):
        assert r.status_code == status and words in r.json()["error"], (body, r.status_code, r.text)

    async def raw():
        async with client_for(service) as c:
            return (
                await c.post("/answer", content=b'{"question": "q", "context": "\xff"}', headers=JSON),
                await c.post("/answer", content=json.dumps(ok).encode(), headers={"content-type": "text/plain"}),
                await c.post("/answer", content=b'{"question": "q", "context": "\\ud800"}', headers=JSON),
                await c.post("/answer", content=b"[1, 2]", headers=JSON),
                await c.post("/answer", content=b'{"question": ', headers=JSON),
            )

    utf8, plain, surrogate, array, broken = asyncio.run(raw())
    assert utf8.status_code == 400 and "UTF-8" in utf8.json()["error"]
    assert plain.status_code == 415 and "application/json" in plain.json()["error"]
    assert surrogate.status_code == 400 and "surrogate" in surrogate.json()["error"]
    assert array.status_code == 400 and "object" in array.json()["error"]
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["error"]
    (after,) = ask(service, ok)
    assert after.status_code == 200  # none of it hurt the service


JSON = {"content-type": "application/json"}


def test_the_openapi_page_documents_the_body_the_parser_takes():
    from services.pipeline import make_app
    from services.qa import ANSWER

    spec = make_app("qa", "question answering", (ANSWER,), current=lambda: None).openapi()
    body = spec["paths"]["/answer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"question", "questions", "context", "pairs", "top_k", "null_threshold"} <= set(body["properties"])
    assert "$defs" not in json.dumps(body) and "question" in json.dumps(body["properties"]["pairs"])
    assert np.isfinite(body["properties"]["top_k"]["maximum"])
