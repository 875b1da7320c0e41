"""Reading-comprehension data in the KorQuAD / SQuAD JSON formats: passages, questions, answer spans.

- KorQuAD 1.0 and SQuAD v1.1: ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
  "answers": [{"text", "answer_start"}]}]}]}]}``; SQuAD v2.0's ``is_impossible`` (no answer in the passage) is read
  too, and is what :func:`write` writes for a question without answers.
- KorQuAD 2.x: ``{"data": [{"title", "context", "qas": [{"id", "question", "answer": {"text", "answer_start"}}]}]}``
  with ``context`` a whole Wikipedia page in HTML. The tags are removed (entities decoded) and each answer's offset
  moved with them; answers that are HTML themselves (tables, lists: their text holds tags) are left out and counted.

Every ``answer_start`` is checked: ``context[answer_start:answer_start + len(text)]`` must be ``text``. An answer
that does not point at its text is reported (:attr:`Reading.problems`) and dropped, never moved silently; a question
left with no answer then is dropped too (it would otherwise read as unanswerable).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character (code point) offset into the passage's context

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[Answer, ...]  # empty: the passage does not answer it


@dataclass(frozen=True)
class Passage:
    id: str
    context: str
    questions: tuple[Question, ...]
    title: str = ""


@dataclass
class Reading:
    """What :func:`read` found: the passages kept and, one line each, what was left out and why."""

    passages: list[Passage]
    problems: list[str] = field(default_factory=list)
    html_answers: int = 0  # KorQuAD 2.x answers that are HTML (tables, lists), left out

    @property
    def n_questions(self) -> int:
        return sum(len(p.questions) for p in self.passages)


_TAG = re.compile(r"<[^<>]*>|&(?:#\d+|#x[0-9a-fA-F]+|\w+);")


def strip_html(raw: str) -> tuple[str, list[int]]:
    """(text, where) with tags removed and entities decoded; ``where[i]`` is the offset in ``raw`` of text
    character ``i`` (``where[len(text)]`` is ``len(raw)``), so an offset into ``raw`` maps onto the text."""
    out: list[str] = []
    where: list[int] = []
    pos = 0
    for m in _TAG.finditer(raw):
        out.append(raw[pos : m.start()])
        where.extend(range(pos, m.start()))
        if m.group().startswith("&"):
            decoded = html.unescape(m.group())
            out.append(decoded)
            where.extend([m.start()] * len(decoded))
        pos = m.end()
    out.append(raw[pos:])
    where.extend(range(pos, len(raw)))
    where.append(len(raw))
    return "".join(out), where


def _aligned(context: str, qid: str, text: str, start: object, problems: list[str]) -> Answer | None:
    if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
        problems.append(f"{qid}: answer {text!r} at {start!r}: expected non-empty text and an integer answer_start")
        return None
    found = context[start : start + len(text)]
    if found != text:
        elsewhere = context.find(text)
        hint = f" (the text occurs at {elsewhere})" if elsewhere >= 0 else " (the text is not in the context)"
        problems.append(f"{qid}: answer_start {start} points at {found!r}, not {text!r}{hint}")
        return None
    return Answer(text, start)


def _question(qid: str, question: object, answers: list[Answer], impossible: bool, had: int) -> Question | None:
    if not isinstance(question, str) or not question.strip():
        return None
    if had and not answers:  # every answer it had was misaligned: reported; not an unanswerable question
        return None
    if not impossible and not answers:
        return None
    return Question(qid, question, tuple(answers))


def _read_v1(data: list, problems: list[str]) -> list[Passage]:
    passages = []
    for i, article in enumerate(data):
        title = str(article.get("title", ""))
        for j, paragraph in enumerate(article.get("paragraphs", [])):
            context = paragraph.get("context")
            if not isinstance(context, str) or not context:
                problems.append(f"{title or i}/{j}: paragraph without a context string")
                continue
            questions = []
            for k, qa in enumerate(paragraph.get("qas", [])):
                qid = str(qa.get("id", f"{i}-{j}-{k}"))
                raw = qa.get("answers", []) or []
                answers = [
                    a for r in raw if (a := _aligned(context, qid, r.get("text"), r.get("answer_start"), problems))
                ]
                answers = list(dict.fromkeys(answers))  # annotators often agree: one span once
                q = _question(qid, qa.get("question"), answers, bool(qa.get("is_impossible")), len(raw))
                if q is not None:
                    questions.append(q)
            if questions:
                passages.append(Passage(f"{i}-{j}", context, tuple(questions), title))
    return passages


def _read_v2(data: list, problems: list[str]) -> tuple[list[Passage], int]:
    passages, html_answers = [], 0
    for i, item in enumerate(data):
        raw_context = item.get("context")
        if not isinstance(raw_context, str) or not raw_context:
            problems.append(f"{item.get('title', i)}: item without a context string")
            continue
        context, where = strip_html(raw_context)
        raw_to_text: dict[int, int] = {}  # raw offset -> the first text character that comes from it
        for t, raw in enumerate(where[:-1]):
            raw_to_text.setdefault(raw, t)
        questions = []
        for k, qa in enumerate(item.get("qas", [])):
            qid = str(qa.get("id", f"{i}-{k}"))
            answer = qa.get("answer") or {}
            text, start = answer.get("text"), answer.get("answer_start")
            if isinstance(text, str) and "<" in text and ">" in text:
                html_answers += 1
                continue
            if isinstance(start, int) and raw_context[start : start + len(text or "")] == text:
                start = raw_to_text.get(start, -1)  # the answer moves with the tags removed before it
            a = _aligned(context, qid, text, start, problems)
            q = _question(qid, qa.get("question"), [a] if a else [], False, 1)
            if q is not None:
                questions.append(q)
        if questions:
            passages.append(Passage(str(i), context, tuple(questions), str(item.get("title", ""))))
    return passages, html_answers


def read(path: str | Path) -> Reading:
    """The passages of a KorQuAD 1.0 / SQuAD v1.1 / v2.0 file or a KorQuAD 2.x file (told apart by their shape),
    or of every ``*.json`` file in a folder (KorQuAD 2.x ships many)."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no *.json files")
    reading = Reading([])
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not a JSON file in UTF-8 ({e})") from e
        data = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(data, list):
            raise ValueError(f"{f}: expected {{'data': [...]}} (KorQuAD / SQuAD JSON)")
        problems: list[str] = []
        if data and "paragraphs" not in data[0] and "context" in data[0]:
            passages, html_answers = _read_v2(data, problems)
            reading.html_answers += html_answers
        else:
            passages = _read_v1(data, problems)
        prefix = f"{f.stem}:" if len(files) > 1 else ""
        reading.passages.extend(Passage(prefix + p.id, p.context, p.questions, p.title) for p in passages)
        reading.problems.extend(prefix + p for p in problems)
    return reading


def write(passages: list[Passage], path: str | Path, version: str = "synthetic") -> None:
    """``passages`` as SQuAD v2.0 JSON (v1.1 and KorQuAD 1.0 readers take it when every question has an answer)."""
    data = [
        {
            "title": p.title or p.id,
            "paragraphs": [
                {
                    "context": p.context,
                    "qas": [
                        {
                            "id": q.id,
                            "question": q.question,
                            "answers": [{"text": a.text, "answer_start": a.start} for a in q.answers],
                            "is_impossible": not q.answers,
                        }
                        for q in p.questions
                    ],
                }
            ],
        }
        for p in passages
    ]
    Path(path).write_text(json.dumps({"version": version, "data": data}, ensure_ascii=False), encoding="utf-8")


def split_by_passage(passages: list[Passage], val_share: float = 0.1) -> tuple[list[Passage], list[Passage]]:
    """(train, val): each passage, with all its questions, on one side by a hash of its context (the same on every
    machine; two copies of a passage land together)."""

    def bucket(p: Passage) -> float:
        return int.from_bytes(hashlib.sha256(p.context.encode()).digest()[:4], "big") / 2**32

    train = [p for p in passages if bucket(p) >= val_share]
    val = [p for p in passages if bucket(p) < val_share]
    return train, val
