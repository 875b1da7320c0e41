"""Question answering's data, span decoding and scores: the KorQuAD / SQuAD reader (misaligned answers reported),
the synthetic Korean reading set (held-out side disjoint from training's), windows and offsets through
sentencepiece tokens, Hangul particles, emoji and combining characters, and KorQuAD's scorer against SQuAD's."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tasks import answering as qa
from training.datasets import korquad, reading


def _squad(paragraphs: list[dict]) -> dict:
    return {"version": "1.0", "data": [{"title": "문서", "paragraphs": paragraphs}]}


def test_reader_reports_misaligned_answers_and_keeps_the_rest(tmp_path):
    context = "대한민국의 수도는 서울이다. 부산은 항구 도시이다."
    doc = _squad(
        [
            {
                "context": context,
                "qas": [
                    {"id": "q1", "question": "수도는?", "answers": [{"text": "서울", "answer_start": 10}] * 2},
                    {"id": "q2", "question": "항구 도시는?", "answers": [{"text": "부산", "answer_start": 3}]},
                    {"id": "q3", "question": "없는 것은?", "answers": [], "is_impossible": True},
                    {"id": "q4", "question": "", "answers": [{"text": "서울", "answer_start": 10}]},
                ],
            }
        ]
    )
    path = tmp_path / "KorQuAD_v1.0_dev.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    got = korquad.read(path)
    (passage,) = got.passages
    assert [q.id for q in passage.questions] == ["q1", "q3"]  # q2 misaligned (dropped), q4 empty question
    assert passage.questions[0].answers == (korquad.Answer("서울", 10),)  # two identical annotations, one answer
    assert passage.questions[1].answers == ()  # SQuAD v2.0's unanswerable
    (problem,) = got.problems
    assert problem.startswith("q2: answer_start 3 points at") and "(the text occurs at 16)" in problem


def test_reader_takes_korquad_2_html_answers_that_are_plain_text(tmp_path):
    raw = (
        "<html><p>세종은 <b>1418년</b>에 즉위했다 &amp; 한글을 만들었다.</p><table><tr><td>표</td></tr></table></html>"
    )
    start = raw.index("1418년")
    item = {
        "title": "세종",
        "context": raw,
        "qas": [
            {"id": "a", "question": "즉위한 해는?", "answer": {"text": "1418년", "answer_start": start}},
            {"id": "b", "question": "만든 것은?", "answer": {"text": "한글", "answer_start": 999}},
            {"id": "c", "question": "표는?", "answer": {"text": "<td>표</td>", "answer_start": raw.index("<td>")}},
        ],
    }
    (tmp_path / "korquad2.1_train_00.json").write_text(json.dumps({"data": [item]}, ensure_ascii=False))
    got = korquad.read(tmp_path)  # a folder of KorQuAD 2.x files
    (passage,) = got.passages
    assert passage.context == "세종은 1418년에 즉위했다 & 한글을 만들었다.표"
    (q,) = passage.questions
    a = q.answers[0]
    assert passage.context[a.start : a.end] == "1418년"
    assert got.html_answers == 1 and len(got.problems) == 1 and "999" in got.problems[0]


def test_reader_refuses_what_is_not_korquad(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape("expected {'data'")):
        korquad.read(bad)
    bad.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="UTF-8"):
        korquad.read(bad)


def test_synthetic_passages_round_trip_through_the_squad_format(tmp_path):
    passages = reading.generate(20, seed=3)
    korquad.write(passages, tmp_path / "synthetic.json")
    got = korquad.read(tmp_path / "synthetic.json")
    assert got.problems == [] and got.n_questions == sum(len(p.questions) for p in passages)
    assert [q.answers for p in got.passages for q in p.questions] == [q.answers for p in passages for q in p.questions]


def test_synthetic_held_out_side_shares_no_value_and_no_frame_with_training():
    train, held = reading.generate(400, seed=1), reading.generate(200, seed=2, held_out=True)
    for passages in (train, held):
        for p in passages:
            for q in p.questions:
                assert all(p.context[a.start : a.end] == a.text for a in q.answers)
    values = [{a.text for p in ps for q in p.questions for a in q.answers} for ps in (train, held)]
    assert not values[0] & values[1]

    def frames(passages) -> set[str]:  # a question with its institution taken out: the frame it was asked in
        return {q.question.replace(p.title, "S")[1:] for p in passages for q in p.questions}

    assert not frames(train) & frames(held)
    questions = [q for p in train for q in p.questions]
    share = sum(not q.answers for q in questions) / len(questions)
    assert 0.15 < share < 0.25  # the default 20 % unanswerable
    assert all(len(side[0]) >= 2 and len(side[1]) >= 2 for _, *sides in reading.RELATIONS.values() for side in sides)


def test_no_answer_augmentation_reaches_its_share_with_questions_their_passage_cannot_answer():
    from training.qa import with_no_answers

    passages = reading.generate(60, seed=3, unanswerable=0.1)  # some without answers already: counted in the share
    answers = {q.id: q.answers for p in passages for q in p.questions}
    out = with_no_answers(passages, 0.25, seed=0)
    questions = [q for p in out for q in p.questions]
    share = sum(not q.answers for q in questions) / len(questions)
    assert 0.2 < share <= 0.25
    for p in out:
        for q in p.questions:
            if "-none-" in q.id:  # asked of another passage: its own answer is not in this one
                original = answers[q.id.rsplit("-none-", 1)[0]]
                assert original and all(a.text not in p.context for a in original)


def test_particles_agree_with_the_last_syllable():
    assert reading.fill("{S:은} {V:을} 받았다.", "한빛 병원", "미래 의학상") == ("한빛 병원은 미래 의학상을 받았다.", 7)
    assert reading.fill("{V:이} {S:과} 일한다.", "다온 재단", "김하도")[0] == "김하도가 다온 재단과 일한다."


def test_real_filler_comes_from_the_real_test_documents():
    from training.datasets import korean_text

    real = {s.text for s in korean_text.corpus() if s.split == "test"}
    if not real:
        pytest.skip("no real Korean text here (make setup fetches it)")
    passages = reading.generate(30, seed=5, held_out=True, filler="real")
    assert any(sentence in p.context for p in passages for sentence in real)


# ---- windows, decoding, offsets ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from training import e5

    return AutoTokenizer.from_pretrained(e5.load_folder())


def _oracle(windows: qa.Windows, start: int, end: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Logits that point at the tokens of [start, end) in the windows that hold it, at [CLS] elsewhere."""
    starts, ends = [], []
    for off in windows.offsets:
        s, e = qa.answer_tokens(off, start, end)
        sl, el = np.zeros(len(off)), np.zeros(len(off))
        sl[s] += 10
        el[e] += 10
        starts.append(sl)
        ends.append(el)
    return starts, ends


@pytest.mark.parametrize("max_length", [384, 40])
def test_gold_spans_come_back_through_windows_with_the_right_offsets(tokenizer, max_length):
    passages = reading.generate(25, seed=7, held_out=True)
    seen_many_windows = False
    for p in passages:
        for q in p.questions:
            w = qa.encode(tokenizer, q.question, p.context, max_length=max_length, stride=12)
            assert all(len(ids) <= max_length for ids in w.ids)
            seen_many_windows |= len(w.ids) > 1
            if not q.answers:
                continue
            a = q.answers[0]
            pred = qa.decode(p.context, w.offsets, *_oracle(w, a.start, a.end))
            best = pred.answers[0]
            assert not pred.no_answer and (best.text, best.start, best.end) == (a.text, a.start, a.end)
            assert p.context[best.start : best.end] == best.text
    assert seen_many_windows == (max_length == 40)


def test_offsets_hold_for_emoji_combining_characters_and_decomposed_hangul(tokenizer):
    import unicodedata

    family = "👩\u200d👩\u200d👧"  # joined by zero-width joiners, which the tokenizer drops
    answers = ["cafe\u0301", "👍🏽", family, unicodedata.normalize("NFD", "서울")]  # a combining acute ends the first
    context = f"😀 아침에 {answers[0]}에서 {answers[1]} 표시를 받고 {family}과 함께 {answers[3]}에서 만났다."
    w = qa.encode(tokenizer, "어디에서 만났나?", context, max_length=384, stride=64)
    for answer in answers:
        start = context.index(answer)
        pred = qa.decode(context, w.offsets, *_oracle(w, start, start + len(answer)))
        assert pred.answers[0].text == answer  # the accent, the skin tone, every jamo of each syllable kept
        assert context[pred.answers[0].start : pred.answers[0].end] == answer
    start = context.index(family)
    assert qa.refine(context, start, start + 3) == (start, start + len(family))  # a span ending inside the sequence


def test_refine_leaves_particles_and_spaces_outside():
    text = "재단은 1979년에 설립되었다. 설립자는 정윤진이다. 고양이가 있다."
    for token_span, answer in [
        ("1979년에", "1979년"),
        ("정윤진이다", "정윤진"),
        (" 설립자는 ", "설립자"),
        ("고양이", "고양이"),
    ]:
        start = text.index(token_span)
        a, b = qa.refine(text, start, start + len(token_span))
        assert text[a:b] == answer


def test_the_null_answer_wins_when_it_scores_higher_and_duplicates_merge(tokenizer):
    context = "한빛 병원은 서울에 있다. " * 30
    w = qa.encode(tokenizer, "어디에 있나?", context, max_length=48, stride=20)
    assert len(w.ids) > 2
    start = context.index("서울")
    starts, ends = _oracle(w, start, start + 2)
    pred = qa.decode(context, w.offsets, starts, ends, top_k=5)
    assert pred.answers[0].text == "서울" and len({(a.start, a.end) for a in pred.answers}) == len(pred.answers)
    for sl, el in zip(starts, ends, strict=True):
        sl[0], el[0] = 20, 20  # every window now prefers [CLS]
    assert qa.decode(context, w.offsets, starts, ends).no_answer


def test_korquad_scorer_ignores_spaces_and_quotes_squad_strips_articles():
    assert qa.normalise_korquad("《서울》 특별시!") == "서울 특별시"
    assert qa.korquad_f1("서울 특별시", "서울특별시") == 1.0 and qa.squad_f1("서울 특별시", "서울특별시") == 0.0
    assert qa.korquad_f1("1979년에", "1979년") == pytest.approx(2 * (5 / 6) * 1 / (5 / 6 + 1))
    got = qa.scores(["the cat", "1979년", None, None, "x"], [["cat"], ['"1979년"'], [], ["부산"], []])
    assert got["n"] == 5
    assert got["exact_match"] == pytest.approx(100 * 2 / 5)  # 1979년 (quotes normalised) and the right no-answer
    assert got["squad_exact_match"] == pytest.approx(100 * 3 / 5)  # SQuAD also drops "the"
    assert got["has_answer_exact_match"] == pytest.approx(100 / 3) and got["no_answer_accuracy"] == 50.0
    with pytest.raises(ValueError, match="2 predictions for 1"):
        qa.scores(["a", "b"], [["a"]])


# ---- the model --------------------------------------------------------------------------------------------------


def _tiny_encoder():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return BertModel(config, add_pooling_layer=False)


@pytest.mark.parametrize("head", ["linear", "gru", "lstm"])
def test_an_answer_does_not_depend_on_the_padding_its_batch_carried(head):
    import torch

    from training.qa import SpanModel

    torch.manual_seed(0)
    model = SpanModel(_tiny_encoder(), head).eval()
    short, long = torch.randint(3, 64, (1, 7)), torch.randint(3, 64, (1, 19))
    alone = model(short, torch.ones_like(short))
    ids = torch.zeros(2, 19, dtype=torch.long)
    ids[0, :7], ids[1] = short[0], long[0]
    mask = (torch.arange(19) < torch.tensor([[7], [19]])).long()
    batched = model(ids, mask)
    for a, b in zip(alone, batched, strict=True):
        assert torch.allclose(a[0], b[0, :7], atol=1e-5)
        assert (b[0, 7:] == -1e4).all()  # padding is never an answer


def test_a_saved_span_model_loads_back_with_its_head(tmp_path):
    import torch
    from transformers import AutoTokenizer

    from training import e5
    from training.qa import SpanModel, load_model, save_folder

    torch.manual_seed(0)
    model = SpanModel(_tiny_encoder(), "gru").eval()
    save_folder(model, AutoTokenizer.from_pretrained(e5.load_folder()), str(tmp_path))
    _, loaded = load_model(str(tmp_path))
    ids = torch.randint(3, 64, (2, 9))
    for a, b in zip(model(ids, torch.ones_like(ids)), loaded(ids, torch.ones_like(ids)), strict=True):
        assert torch.equal(a, b)
    assert loaded.head == "gru"


@pytest.mark.parametrize("head", ["linear", "gru"])
def test_onnx_export_matches_pytorch_on_logits_and_answers(tokenizer, tmp_path, head):
    import torch
    from transformers import BertConfig, BertModel

    from exporters import qa as qa_export
    from exporters.validate import ParityError
    from tasks.spec import QASpec
    from training.qa import SpanModel

    def model(seed: int) -> SpanModel:
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        return SpanModel(BertModel(config, add_pooling_layer=False), head).eval()

    spec = QASpec(name="qa", description="", synthetic="training.datasets.reading:generate", max_length=48, stride=16)
    passages = reading.generate(4, seed=11, held_out=True)
    questions = [(q.question, p.context) for p in passages for q in p.questions]
    path = tmp_path / "model.onnx"
    qa_export.export_onnx(model(0), spec, "qa:test", path)
    report = qa_export.validate(model(0), path, tokenizer, questions, spec, atol=1e-4)
    assert report["changed_answers"] == 0 and report["n_windows"] > len(questions)  # contexts past one window
    with pytest.raises(ParityError):
        qa_export.validate(model(1), path, tokenizer, questions, spec, atol=1e-4)  # another model: caught
