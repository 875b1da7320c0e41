"""The real-text speech sets: cleaning, and a split by document that no sentence or document crosses."""

from __future__ import annotations

from collections import Counter

import pytest

from training.datasets import korean_text
from training.datasets.korean_text import clean, corpus, html_text, split_sentences, unwrap


def test_cleaning_keeps_speakable_hangul_sentences_only():
    law = "모든 국민은 사생활의 비밀과 자유를 침해받지 아니한다."
    assert clean(law) == law
    assert clean("① 대한민국은 민주공화국이다(제1조).") == "대한민국은 민주공화국이다."  # numbering, aside dropped
    assert clean("“정의”를 다음과 같이 개정한다.") == "정의를 다음과 같이 개정한다."
    assert clean("apt-get을 실행하면 패키지가 설치됩니다.") is None  # Latin: spelled unlike it is read
    assert clean("만 6세 이하의 자녀를 양육하는 경우.") is None  # digits: read as words, written as digits
    assert clean("짧은 문장.") is None  # under 8 syllables
    assert clean("문장이 끝나지 않고 다음 줄로 이어지는 조각") is None  # no end mark: a fragment


def test_wrapped_bill_lines_and_html_become_whole_sentences():
    bill = "저학년에도 부모의 사랑이 필요\n\n한 나이이나, 자녀를 돌보기 \n\n위해서는 일을 그만 두어야 함."
    whole = "저학년에도 부모의 사랑이 필요한 나이이나, 자녀를 돌보기 위해서는 일을 그만 두어야 함."
    assert split_sentences(unwrap(bill)) == [whole]
    page = "<p>새 패키지를 설치하기 전에 목록을 확인합니다. <code>dpkg</code> 명령으로 목록을 봅니다.</p>"
    found = [clean(s) for s in split_sentences(html_text(page.encode()))]
    assert found[0] == "새 패키지를 설치하기 전에 목록을 확인합니다."
    assert found[1] is None  # the sentence that held code is dropped, not read with a hole in it


def test_split_is_by_document_and_no_sentence_or_document_crosses():
    sentences = corpus()
    if not sentences:
        pytest.fail("no real Korean text: `make setup` installs konlpy and fetches the Debian text packages")
    docs: dict[str, set[str]] = {}
    texts: dict[str, set[str]] = {}
    for s in sentences:
        docs.setdefault(s.document, set()).add(s.split)
        texts.setdefault(s.text.replace(" ", "").rstrip(".?!"), set()).add(s.split)
        assert s.split == korean_text.document_split(s.document)
    assert all(len(v) == 1 for v in docs.values()), "a document on two sides"
    assert all(len(v) == 1 for v in texts.values()), "a sentence on two sides"
    per_split = Counter(s.split for s in sentences)
    assert per_split["train"] >= 1000 and per_split["val"] >= 200 and per_split["test"] >= 500, per_split
    sources = {s.document.split("/")[0] for s in sentences if s.split == "test"}
    assert {"kobill", "debian-faq", "libreoffice-help"} <= sources | {"kolaw"}, sources
    held_out = {s.text for s in korean_text.sentences("test", 50, seed=3)}
    assert held_out.isdisjoint(s.text for s in korean_text.sentences("train"))


def test_terms_select_sentences_that_hold_them():
    chosen = korean_text.sentences("train", None, terms=("패키지",))
    assert chosen and all("패키지" in s.text for s in chosen)
