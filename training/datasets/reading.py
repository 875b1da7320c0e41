"""Synthetic Korean reading comprehension (KorQuAD style) for the demo QA model, tests and parity checks.

A passage describes an institution through facts (when it was founded, where it is, who founded it, who leads it,
how many work there, its field, an award, a partner), each stated in one of several sentence frames with the
particles its words take (은/는, 이/가, 을/를, 과/와), among facts about a second institution (so a question must be
matched to the right subject) and filler sentences. Questions ask about the facts in several forms; the answer is
the span of the fact's value. About ``unanswerable`` of the questions ask about a fact the passage does not state
for that institution (often one it states for the other: a hard negative); their answer list is empty.

Two sides that share nothing but the grammar: ``held_out=False`` (train and validation) and ``held_out=True``
(only ever evaluated). They draw institutions, people, cities, fields, awards, years and head counts from
disjoint pools, and state facts and ask questions in disjoint sentence frames, so a held-out question cannot be
answered by having memorised a name or a frame. ``filler="real"`` surrounds the facts with real Korean sentences
from text that ships in packages (:mod:`training.datasets.korean_text`, test documents) instead of generated
ones: passages from another source.
"""

from __future__ import annotations

import re

import numpy as np

from training.datasets.korean_speech import has_final_consonant
from training.datasets.korquad import Answer, Passage, Question


def _words(text: str) -> list[str]:
    return text.split()


def _phrases(text: str) -> list[str]:
    return text.split(", ")


SURNAMES = _words("김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 류 홍")
# Per side: (train, held-out). Given names, institutions and values never cross sides.
GIVEN = (_words("민 서 준 지 현 우 예 도 하 윤 수 진 영 호 은"), _words("태 린 규 설 혜 찬 별 솔 담 온"))
ORG_PREFIX = (
    _words("한빛 새봄 푸른솔 늘해랑 다온 가람 미르 바다숲 해오름 별빛 누리 온새미 한울 아라 라온 나래 초록 은하"),
    _words("시나브로 하늬 다솜 윤슬 여울 그린나래 한결 도담 새벽별 늘품"),
)
ORG_TYPE = (
    _words("의학연구소 병원 생명과학재단 보건센터 연구원 의료원 기술연구소"),
    _words("바이오센터 임상연구원 의과학원"),
)
CITIES = (
    _words("서울 부산 대구 인천 광주 대전 울산 수원 창원 고양 용인 성남 청주 전주 천안 안산 안양 포항"),
    _words("김해 제주 원주 춘천 강릉 목포 여수 순천 경주 군산"),
)
FIELDS = (
    _phrases("면역학, 유전체 분석, 감염병 연구, 뇌과학, 재생 의학, 약물 전달, 의료 영상, 심장학, 암 치료, 노인 의학"),
    _phrases("정밀 의학, 디지털 병리학, 미생물 생태, 수면 의학, 척추 재활, 희귀 질환"),
)
AWARDS = (
    _phrases("올해의 연구상, 과학기술 대상, 보건의료 혁신상, 국민 건강상, 우수 기관상, 창의 연구상"),
    _phrases("생명 존중상, 미래 의학상, 공공 보건 공로상, 인류 복지상"),
)
YEARS = ((1900, 1990), (1990, 2025))
COUNTS = ((10, 1000), (1000, 10000))

# Per relation: the value's kind, then (statement frames, question frames) for each side. {S} is the institution,
# {V} the value (the answer span); ":은" and the like add the particle that agrees with the word before it.
RELATIONS: dict[str, tuple[str, tuple[list[str], list[str]], tuple[list[str], list[str]]]] = {
    "founded": (
        "year",
        (
            ["{S:은} {V}에 설립되었다.", "{S:은} {V}에 문을 열었다.", "{V}에 세워진 {S:은} 지역의 대표 기관이다."],
            ["{S:은} 언제 설립되었나?", "{S:이} 설립된 해는 언제인가?", "{S:은} 몇 년에 문을 열었습니까?"],
        ),
        (
            ["{S:의} 역사는 {V}에 시작되었다.", "{S:이} 처음 설립된 것은 {V}이다."],
            ["{S:이} 세워진 연도는?", "{S:의} 설립 연도를 알려 주세요."],
        ),
    ),
    "city": (
        "city",
        (
            ["{S:은} {V}에 있다.", "{S:의} 본부는 {V}에 있다.", "{V}에 자리한 {S:은} 많은 사람이 찾는다."],
            ["{S:은} 어디에 있나?", "{S:의} 본부는 어느 도시에 있습니까?", "{S:이} 자리한 도시는?"],
        ),
        (
            ["{S:은} {V}에 위치해 있다.", "{S:이} 있는 곳은 {V}이다."],
            ["{S:은} 어느 지역에 위치해 있나요?", "{S:을} 찾아가려면 어느 도시로 가야 하나?"],
        ),
    ),
    "founder": (
        "person",
        (
            ["{V:이} {S:을} 세웠다.", "{S:은} {V:이} 설립했다.", "{S:의} 설립자는 {V}이다."],
            ["{S:을} 세운 사람은 누구인가?", "{S:의} 설립자는 누구입니까?", "누가 {S:을} 설립했나?"],
        ),
        (
            ["{S:을} 처음 만든 사람은 {V}이다.", "{V:은} 뜻을 모아 {S:을} 창립했다."],
            ["{S:을} 창립한 인물은 누구인가요?", "{S:을} 처음 만든 사람의 이름은?"],
        ),
    ),
    "head": (
        "person",
        (
            ["현재 {S:은} {V:이} 이끌고 있다.", "{S:의} 원장은 {V}이다.", "{V:은} {S:의} 대표를 맡고 있다."],
            ["{S:을} 이끄는 사람은 누구인가?", "{S:의} 원장은 누구인가?", "{S:의} 대표는 누구입니까?"],
        ),
        (
            ["{S:의} 책임자로 일하는 사람은 {V}이다.", "{V:이} {S:의} 운영을 책임진다."],
            ["{S:의} 운영을 책임지는 사람은?", "지금 {S:의} 책임자는 누구인가요?"],
        ),
    ),
    "staff": (
        "count",
        (
            ["{S}에는 {V}의 연구원이 일한다.", "{S:은} {V}의 직원을 두고 있다.", "{S}에서 일하는 사람은 모두 {V}이다."],
            ["{S}에서 일하는 사람은 몇 명인가?", "{S:의} 직원 수는 얼마인가?", "{S:은} 몇 명의 직원을 두고 있나?"],
        ),
        (
            ["{S:의} 구성원은 {V}에 이른다.", "{V}의 직원이 {S}에서 근무한다."],
            ["{S:의} 구성원은 모두 몇 명입니까?", "{S}에서 근무하는 인원은?"],
        ),
    ),
    "field": (
        "field",
        (
            ["{S:은} 주로 {V:을} 연구한다.", "{S:의} 주요 분야는 {V}이다.", "{S:은} {V} 분야에서 널리 알려져 있다."],
            ["{S:은} 주로 무엇을 연구하나?", "{S:의} 주요 분야는 무엇인가?", "{S:이} 연구하는 분야는?"],
        ),
        (
            ["{S:이} 가장 힘을 쏟는 분야는 {V}이다.", "{V:은} {S:의} 핵심 연구 주제이다."],
            ["{S:이} 가장 힘을 쏟는 분야는 무엇인가요?", "{S:의} 핵심 연구 주제는?"],
        ),
    ),
    "award": (
        "award",
        (
            ["{S:은} {V:을} 받았다.", "{S:이} 받은 가장 큰 상은 {V}이다.", "{V:은} {S}에 돌아갔다."],
            ["{S:이} 받은 상은 무엇인가?", "{S:은} 어떤 상을 받았나?", "{S}에 돌아간 상은?"],
        ),
        (
            ["{S:은} 그동안의 성과로 {V:을} 수상했다.", "{S}에 {V:이} 수여되었다."],
            ["{S:이} 수상한 상의 이름은?", "{S}에 수여된 상은 무엇인가요?"],
        ),
    ),
    "partner": (
        "org",
        (
            ["{S:은} {V:과} 협력하고 있다.", "{S:의} 협력 기관은 {V}이다.", "{V:과} {S:은} 공동 연구를 한다."],
            ["{S:과} 협력하는 기관은 어디인가?", "{S:의} 협력 기관은?", "{S:은} 어느 기관과 공동 연구를 하나?"],
        ),
        (
            ["{S:은} 오랫동안 {V:과} 손을 잡아 왔다.", "{S:과} 함께 일하는 기관은 {V}이다."],
            ["{S:과} 손을 잡은 기관은 어디인가요?", "{S:과} 함께 일하는 곳은?"],
        ),
    ),
}
FILLER = (
    [
        "이곳은 매년 많은 방문객을 맞는다.",
        "지역 주민을 위한 공개 강연도 자주 열린다.",
        "최근에는 새로운 건물이 들어섰다.",
        "기관의 소식은 누리집에서 볼 수 있다.",
        "젊은 연구자들의 참여가 늘고 있다.",
        "여러 나라의 학자들이 이곳을 찾는다.",
    ],
    [
        "주말에는 어린이를 위한 체험 행사가 열린다.",
        "해마다 발간하는 보고서가 좋은 평가를 받는다.",
        "주변에는 넓은 공원이 조성되어 있다.",
    ],
)
CONNECTIVES = (["또한 ", "한편 ", "그리고 "], ["아울러 ", "게다가 "])
PARTICLES = {"은": ("은", "는"), "이": ("이", "가"), "을": ("을", "를"), "과": ("과", "와"), "의": ("의", "의")}
SLOT = re.compile(r"\{([SV])(?::(\w))?\}")


def particle(word: str, which: str) -> str:
    """The form of particle ``which`` (은, 이, 을, 과, 의) that agrees with ``word``'s last syllable."""
    after_consonant, after_vowel = PARTICLES[which]
    return after_consonant if has_final_consonant(word) else after_vowel


def fill(frame: str, subject: str, value: str) -> tuple[str, int | None]:
    """(sentence, offset of the value in it, or None when the frame has no value)."""
    out, pos, at = [], 0, None
    for m in SLOT.finditer(frame):
        out.append(frame[pos : m.start()])
        word = subject if m.group(1) == "S" else value
        if m.group(1) == "V":
            at = sum(len(x) for x in out)
        out.append(word + (particle(word, m.group(2)) if m.group(2) else ""))
        pos = m.end()
    out.append(frame[pos:])
    return "".join(out), at


class _Pools:
    def __init__(self, rng: np.random.Generator, side: int) -> None:
        self.rng, self.side = rng, side

    def pick(self, pool: list[str]) -> str:
        return str(self.rng.choice(pool))

    def org(self) -> str:
        return self.pick(ORG_PREFIX[self.side]) + " " + self.pick(ORG_TYPE[self.side])

    def person(self) -> str:
        return self.pick(SURNAMES) + "".join(self.rng.choice(GIVEN[self.side], 2, replace=False))

    def value(self, kind: str) -> str:
        if kind == "year":
            return f"{int(self.rng.integers(*YEARS[self.side]))}년"
        if kind == "count":
            return f"{int(self.rng.integers(*COUNTS[self.side]))}명"
        if kind == "city":
            return self.pick(CITIES[self.side])
        if kind == "person":
            return self.person()
        if kind == "field":
            return self.pick(FIELDS[self.side])
        if kind == "award":
            return self.pick(AWARDS[self.side])
        return self.org()


def _facts(pools: _Pools, subject: str, relations: list[str]) -> dict[str, str]:
    facts: dict[str, str] = {}
    for r in relations:
        v = pools.value(RELATIONS[r][0])
        while v == subject or v in facts.values():  # a partner is another institution; values stay distinct
            v = pools.value(RELATIONS[r][0])
        facts[r] = v
    return facts


def generate_passage(
    rng: np.random.Generator, pid: str, held_out: bool, unanswerable: float, real: list[str] | None = None
) -> Passage:
    side = int(held_out)
    pools = _Pools(rng, side)
    names = list(RELATIONS)
    subject = pools.org()
    other = pools.org()
    while other == subject:
        other = pools.org()
    stated = list(rng.permutation(names)[: int(rng.integers(3, 7))])
    facts = _facts(pools, subject, stated)
    other_facts = _facts(pools, other, list(rng.permutation(names)[: int(rng.integers(1, 4))]))

    # (sentence frame, subject, value, relation or None for the other institution's facts and filler)
    items: list[tuple[str, str, str, str | None]] = [
        (pools.pick(RELATIONS[r][1 + side][0]), subject, v, r) for r, v in facts.items()
    ]
    for r, v in other_facts.items():
        items.insert(int(rng.integers(1, len(items) + 1)), (pools.pick(RELATIONS[r][1 + side][0]), other, v, None))
    fillers = real if real is not None else FILLER[side]
    for _ in range(int(rng.integers(0, 3 if real is None else 5))):
        items.insert(int(rng.integers(0, len(items) + 1)), (pools.pick(fillers), "", "", None))

    context, spans = "", {}
    for i, (frame, s, v, relation) in enumerate(items):
        sentence, at = fill(frame, s, v) if s else (frame, None)
        if i and s and rng.random() < 0.25:
            connective = pools.pick(CONNECTIVES[side])
            sentence, at = connective + sentence, None if at is None else at + len(connective)
        start = len(context) + (1 if context else 0)
        context = f"{context} {sentence}" if context else sentence
        if relation is not None and at is not None:
            spans[relation] = Answer(v, start + at)

    questions = []
    asked = list(rng.permutation(stated)[: int(rng.integers(1, min(4, len(stated)) + 1))])
    missing = [r for r in names if r not in facts]
    for k, r in enumerate(asked):
        questions.append(
            Question(f"{pid}-{k}", fill(pools.pick(RELATIONS[r][1 + side][1]), subject, "")[0], (spans[r],))
        )
    # one unanswerable question in this share of passages makes ``unanswerable`` the share of questions
    if missing and rng.random() < unanswerable * len(asked) / (1 - unanswerable):
        r = str(rng.choice(sorted(missing, key=lambda m: m not in other_facts)[:2]))  # the other's facts first
        questions.append(
            Question(f"{pid}-{len(asked)}", fill(pools.pick(RELATIONS[r][1 + side][1]), subject, "")[0], ())
        )
    return Passage(pid, context, tuple(questions), title=subject)


def generate(
    n: int, seed: int = 0, held_out: bool = False, unanswerable: float = 0.2, filler: str = "synthetic"
) -> list[Passage]:
    """``n`` passages (each with 1-5 questions) of one side; ``filler="real"`` takes the filler sentences from the
    real Korean test documents (:mod:`training.datasets.korean_text`)."""
    if filler not in ("synthetic", "real"):
        raise ValueError(f"filler: expected 'synthetic' or 'real', got {filler!r}")
    real = None
    if filler == "real":
        from training.datasets import korean_text

        real = [s.text for s in korean_text.corpus() if s.split == "test"]
        if not real:
            raise FileNotFoundError("no real Korean text: run `python -m training.datasets.korean_text --fetch`")
    rng = np.random.default_rng(seed)
    side = "heldout" if held_out else "train"
    return [generate_passage(rng, f"{side}-{seed}-{i}", held_out, unanswerable, real) for i in range(n)]
