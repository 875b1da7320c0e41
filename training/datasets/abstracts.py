"""Keyphrase documents: synthetic scientific abstracts (English and Korean) with known keyphrases, and the
Inspec / SemEval-2017 JSON-lines format.

Synthetic: each abstract belongs to one domain (machine learning, medicine, materials, networking, ecology).
Its keyphrases are domain terms, a modifier or two before a head noun ("variational graph autoencoder", "급성
신장 손상"), each mentioned once or more; generic academic phrases ("experimental results", "기존 방법") fill the
same sentence slots and are not keyphrases. Every vocabulary word belongs to one side: held-out abstracts build
their keyphrases only from words (a fixed quarter of each pool, chosen by hash) that training abstracts never
use, so a tagger must learn what a keyphrase looks like, not which words are keyphrases.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.datasets.korean_speech import has_final_consonant


@dataclass
class Doc:
    text: str
    keyphrases: list[str]  # gold, unique, in order of first mention
    spans: list[tuple[int, int]] = field(default_factory=list)  # every mention, character offsets
    language: str = "en"


EN = {
    "ml": (
        "convolutional recurrent generative adversarial bayesian sparse contrastive federated variational "
        "probabilistic hierarchical multimodal self-supervised kernel spectral causal quantized recursive "
        "residual siamese",
        "network autoencoder embedding classifier regression clustering transformer tokenizer encoder "
        "decoder distillation segmentation retrieval",
    ),
    "medicine": (
        "cardiac pulmonary renal oncologic pediatric neonatal hepatic chronic acute diabetic ischemic "
        "postoperative metastatic autoimmune vascular neurological gastric ocular thyroid dermal",
        "imaging biomarker therapy screening cohort surgery infection lesion stenosis fibrosis carcinoma "
        "transplantation inflammation",
    ),
    "materials": (
        "polymer ceramic graphene perovskite metallic porous amorphous crystalline magnetic piezoelectric "
        "nanostructured organic hybrid layered conductive biodegradable ferroelectric colloidal epitaxial "
        "superconducting",
        "film electrode catalyst alloy coating membrane nanowire electrolyte semiconductor composite "
        "substrate oxide adhesive",
    ),
    "networks": (
        "wireless optical vehicular cellular satellite mobile distributed adaptive cooperative multipath "
        "secure decentralized low-latency energy-aware opportunistic mesh virtualized programmable "
        "delay-tolerant heterogeneous",
        "routing protocol scheduling caching localization handover beamforming multiplexing congestion "
        "offloading slicing synchronization authentication",
    ),
    "ecology": (
        "coastal alpine tropical urban marine freshwater migratory invasive endemic nocturnal arid boreal "
        "riparian benthic pelagic montane insular temperate subterranean agricultural",
        "ecosystem habitat biodiversity population pollination predation dispersal grassland wetland "
        "reef phenology foraging succession",
    ),
}
KO = {
    "ml": (
        "합성곱 순환 생성적 적대적 베이지안 희소 대조적 연합 변분 확률적 계층적 다중모달 자기지도 커널 스펙트럼 "
        "인과적 양자화 재귀적 잔차 샴",
        "신경망 오토인코더 임베딩 분류기 회귀 군집화 트랜스포머 토크나이저 인코더 디코더 증류 분할 검색",
    ),
    "medicine": (
        "심장 폐 신장 종양 소아 신생아 간 만성 급성 당뇨병성 허혈성 수술 후 전이성 자가면역 혈관 신경학적 위 안구 "
        "갑상선 피부",
        "영상 바이오마커 치료 선별검사 코호트 수술 감염 병변 협착 섬유화 암종 이식 염증",
    ),
    "materials": (
        "고분자 세라믹 그래핀 페로브스카이트 금속 다공성 비정질 결정질 자성 압전 나노구조 유기 하이브리드 층상 "
        "전도성 생분해성 강유전 콜로이드 에피택셜 초전도",
        "박막 전극 촉매 합금 코팅 분리막 나노선 전해질 반도체 복합재 기판 산화물 접착제",
    ),
}
KO["medicine"] = (KO["medicine"][0].replace("수술 후", "수술후"), KO["medicine"][1])
DISTRACTORS = {
    "en": [
        "the proposed method",
        "experimental results",
        "previous work",
        "a significant improvement",
        "the state of the art",
        "large-scale experiments",
        "real-world data",
        "benchmark datasets",
        "computational cost",
        "future work",
        "several baselines",
        "the literature",
        "a case study",
        "practical settings",
    ],
    "ko": [
        "기존 방법",
        "실험 결과",
        "선행 연구",
        "성능 향상",
        "계산 비용",
        "대규모 데이터",
        "벤치마크 데이터셋",
        "향후 연구",
        "여러 기준 모델",
        "실제 환경",
        "사례 연구",
    ],
}
TEMPLATES = {
    "en": [
        "This paper presents {k0} for {k1}.",
        "We propose a novel approach to {k1} based on {k0} and {k2}.",
        "{k0} has attracted attention in {d} because of {k2}.",
        "Unlike {d}, our method combines {k2} with {k3}.",
        "Experiments on {d} show that {k1} improves {k3} with {d}.",
        "We further analyse {k3} and its relation to {k4}.",
        "The results indicate that {k0} reduces {d} compared with {d}.",
        "Finally, we discuss {k4} and outline {d}.",
        "A study of {k2} in the context of {k1} is also reported, together with {d}.",
        "In {d}, {k4} remains difficult to evaluate.",
    ],
    "ko": [
        "본 논문에서는 {k1:을} 위한 {k0:을} 제안한다.",
        "{k0:은} {d}에서 {k2:과} 함께 널리 연구되어 왔다.",
        "제안한 방법은 {k2:을} {k3}에 결합한다.",
        "{d}에 대한 실험 결과 {k1:이} {k3:을} 개선함을 확인하였다.",
        "또한 {k3:과} {k4}의 관계를 분석하였다.",
        "{k0:은} {d:과} 비교하여 {d:을} 줄인다.",
        "마지막으로 {k4}의 한계와 {d:을} 논의한다.",
        "{d}에서 {k4:은} 여전히 평가하기 어렵다.",
    ],
}
COUNTABLE = {
    "network",
    "autoencoder",
    "embedding",
    "classifier",
    "encoder",
    "decoder",
    "biomarker",
    "lesion",
    "film",
    "electrode",
    "catalyst",
    "alloy",
    "coating",
    "membrane",
    "nanowire",
    "semiconductor",
    "composite",
    "substrate",
    "oxide",
    "adhesive",
    "protocol",
    "ecosystem",
    "habitat",
    "population",
    "grassland",
    "wetland",
    "reef",
}
PARTICLES = {"을": ("을", "를"), "이": ("이", "가"), "은": ("은", "는"), "과": ("과", "와")}
SLOT = re.compile(r"\{(k\d|d)(?::(\w))?\}")


def _rank(word: str) -> bytes:
    return hashlib.sha256(word.encode()).digest()


def _pools(language: str, held_out: bool) -> dict[str, tuple[list[str], list[str]]]:
    """Per domain, (modifiers, heads) of one side. The held-out side is the quarter of each pool (rounded up) that
    comes first in SHA-256 order: the same on every machine and for every seed."""
    vocab = EN if language == "en" else KO
    out = {}
    for domain, pair in vocab.items():
        sides = []
        for words in pair:
            ranked = sorted(words.split(), key=_rank)
            cut = -(-len(ranked) // 4)
            sides.append(ranked[:cut] if held_out else ranked[cut:])
        out[domain] = tuple(sides)
    return out


def _keyphrase(rng: np.random.Generator, modifiers: list[str], heads: list[str], language: str) -> str:
    n_mod = 1 if rng.random() < 0.7 or len(modifiers) < 2 else 2
    words = [*rng.choice(modifiers, n_mod, replace=False), str(rng.choice(heads))]
    if language == "en" and words[-1] in COUNTABLE and rng.random() < 0.3:
        words[-1] += "s"
    return " ".join(words)


def _stem(phrase: str) -> str:
    return phrase[:-1] if phrase.endswith("s") else phrase


def _particle(word: str, particle: str | None) -> str:
    if particle is None:
        return ""
    after_consonant, after_vowel = PARTICLES[particle]
    return after_consonant if has_final_consonant(word) else after_vowel


def generate_doc(rng: np.random.Generator, language: str, held_out: bool) -> Doc:
    pools = _pools(language, held_out)
    domain = str(rng.choice(sorted(pools)))
    modifiers, heads = pools[domain]
    phrases: list[str] = []
    while len(phrases) < 5:
        k = _keyphrase(rng, modifiers, heads, language)
        if _stem(k) not in {_stem(p) for p in phrases}:
            phrases.append(k)
    templates = TEMPLATES[language]
    first = [0, 1]  # the opening sentences name the main keyphrases
    rest = list(rng.permutation(range(2, len(templates)))[: int(rng.integers(3, len(templates) - 1))])
    text, spans, used = "", [], []
    for t in first + rest:
        template = templates[t]
        pieces, pos = [], 0
        for m in SLOT.finditer(template):
            pieces.append(template[pos : m.start()])
            slot, particle = m.group(1), m.group(2)
            word = str(rng.choice(DISTRACTORS[language])) if slot == "d" else phrases[int(slot[1])]
            start = len(text) + sum(len(p) for p in pieces)
            if slot != "d":
                spans.append((start, start + len(word)))
                used.append(word)
            pieces.append(word + _particle(word, particle))
            pos = m.end()
        pieces.append(template[pos:])
        sentence = "".join(pieces)
        if sentence[0].islower():
            sentence = sentence[0].upper() + sentence[1:]
        text += sentence + " "
    keyphrases = list(dict.fromkeys(used))
    return Doc(text.rstrip(), keyphrases, spans, language)


def generate(n: int, seed: int = 0, held_out: bool = False, korean_share: float = 0.3) -> list[Doc]:
    """``n`` abstracts, about ``korean_share`` of them Korean; ``held_out`` builds keyphrases only from held-out
    vocabulary."""
    rng = np.random.default_rng(seed)
    return [generate_doc(rng, "ko" if rng.random() < korean_share else "en", held_out) for _ in range(n)]


def read_jsonl(path: str | Path) -> list[Doc]:
    """Inspec / SemEval-2017 JSON lines: ``tokens`` (or ``document``) with BIO ``tags`` (or ``doc_bio_tags``) and
    gold ``keyphrases`` (or ``extractive_keyphrases`` plus ``abstractive_keyphrases``). The text is the tokens
    joined by spaces; spans come from the tags."""
    docs = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        tokens = row.get("tokens", row.get("document"))
        tags = row.get("tags", row.get("doc_bio_tags"))
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise ValueError(f"{path}: line {i + 1} needs 'tokens' and as many BIO 'tags'")
        spans, start, open_span = [], 0, None
        for token, tag in zip(tokens, tags, strict=True):
            tag = str(tag).upper()
            if tag not in ("B", "I", "O"):
                raise ValueError(f"{path}: line {i + 1}: tag {tag!r} is not B, I or O")
            if open_span and tag != "I":
                spans.append(open_span)
                open_span = None
            if tag == "B" or (tag == "I" and open_span is None):
                open_span = (start, start + len(token))
            elif tag == "I":
                open_span = (open_span[0], start + len(token))
            start += len(token) + 1
        if open_span:
            spans.append(open_span)
        text = " ".join(tokens)
        gold = row.get("keyphrases")
        if gold is None:
            gold = [*row.get("extractive_keyphrases", []), *row.get("abstractive_keyphrases", [])]
        if not gold:
            gold = list(dict.fromkeys(text[a:b] for a, b in spans))
        docs.append(Doc(text, [str(k) for k in gold], spans, str(row.get("language", "en"))))
    return docs
