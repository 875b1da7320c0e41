"""Extractive question answering for :class:`~tasks.spec.QASpec` tasks: a BERT-like encoder (multilingual-e5-small
by default) with a start / end head, optionally a bidirectional GRU or LSTM layer between them (the seed study's
options), fine-tuned on windows of ``[CLS] question [SEP] context [SEP]``.

Data: the synthetic Korean reading set (:mod:`training.datasets.reading`; held-out passages from names, values and
sentence frames training never saw, and the same with real Korean filler sentences) or KorQuAD / SQuAD JSON
(``--data FILE|DIR``, split by passage). ``--no-answer SHARE``: that share of the training questions has no answer
(the generator asks about facts a passage does not state; for real data, answerable questions are asked of another
passage), so the model learns to say so. Evaluation: KorQuAD's EM and character F1 and SQuAD's, with the answer
decoding the service uses (:func:`tasks.answering.decode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tasks import answering
from tasks.spec import QASpec, resolve
from training.config import TrainConfig
from training.datasets.korquad import Passage, Question, read, split_by_passage
from training.fit import FitResult, fit, pick_device, schedule
from training.tagger import load_base_described

HEAD_FILE = "span_head.pt"


class SpanModel(nn.Module):
    """(input_ids, attention_mask) (N, L) int64 -> (start_logits, end_logits) (N, L) float32; padding gets -1e4.

    The GRU / LSTM layer runs each direction over the real tokens only (the backward pass reads each row reversed
    within its own length), so an answer does not depend on how much padding its batch carried."""

    def __init__(self, encoder: nn.Module, head: str = "linear") -> None:
        super().__init__()
        if head not in ("linear", "gru", "lstm"):
            raise ValueError(f"head: expected linear, gru or lstm, got {head!r}")
        hidden = encoder.config.hidden_size
        self.encoder, self.head = encoder, head
        if head != "linear":
            rnn = nn.GRU if head == "gru" else nn.LSTM
            self.forward_rnn = rnn(hidden, hidden // 2, batch_first=True)
            self.backward_rnn = rnn(hidden, hidden // 2, batch_first=True)
        self.qa_outputs = nn.Linear(hidden if head == "linear" else 2 * (hidden // 2), 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.head != "linear":
            lengths = attention_mask.sum(1, keepdim=True)  # (N, 1)
            pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)  # (1, L)
            rev = torch.where(pos < lengths, lengths - 1 - pos, pos).unsqueeze(-1)  # (N, L, 1): within each length
            fwd, _ = self.forward_rnn(h)
            bwd, _ = self.backward_rnn(torch.gather(h, 1, rev.expand(-1, -1, h.shape[-1])))
            bwd = torch.gather(bwd, 1, rev.expand(-1, -1, bwd.shape[-1]))
            h = torch.cat([fwd, bwd], -1)
        logits = self.qa_outputs(h).float()
        pad = attention_mask == 0
        return logits[..., 0].masked_fill(pad, -1e4), logits[..., 1].masked_fill(pad, -1e4)

    def head_state(self) -> dict:
        """What :data:`HEAD_FILE` holds: the head's kind and every weight that is not the encoder's."""
        weights = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        return {"head": self.head, "state_dict": weights}


def save_folder(model: SpanModel, tokenizer, folder: str) -> None:
    """The encoder's transformers files (weights, config), the tokenizer's and :data:`HEAD_FILE`."""
    from pathlib import Path

    model.encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.head_state(), Path(folder) / HEAD_FILE)


def load_model(folder: str) -> tuple[object, SpanModel]:
    """(tokenizer, model) from a store entry's folder: the encoder's transformers files and :data:`HEAD_FILE`."""
    from pathlib import Path

    from transformers import AutoModel, AutoTokenizer

    saved = torch.load(Path(folder) / HEAD_FILE, map_location="cpu", weights_only=True)
    model = SpanModel(AutoModel.from_pretrained(folder, add_pooling_layer=False), saved["head"])
    missing, unexpected = model.load_state_dict(saved["state_dict"], strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise ValueError(f"{folder}/{HEAD_FILE}: does not fit a {saved['head']} head ({unexpected or missing})")
    return AutoTokenizer.from_pretrained(folder), model.eval()


# ---- data -------------------------------------------------------------------------------------------------------


@dataclass
class Sets:
    train: list[Passage]
    val: list[Passage]
    tests: dict[str, list[Passage]]  # name -> held-out passages ("test" first)
    source: str


def with_no_answers(passages: list[Passage], share: float, seed: int) -> list[Passage]:
    """``passages`` plus questions asked of a passage that does not answer them (each an answerable question of
    another passage whose answers are not in this one), until ``share`` of all questions have no answer."""
    rng = np.random.default_rng(seed)
    questions = [q for p in passages for q in p.questions]
    n_none = sum(not q.answers for q in questions)
    want = int((share * len(questions) - n_none) / (1 - share)) if share else 0  # (n_none + x) / (n + x) = share
    extra: dict[int, list[Question]] = {}
    answerable = [(i, q) for i, p in enumerate(passages) for q in p.questions if q.answers]
    for k in range(max(0, want)):
        if len(passages) < 2 or not answerable:
            break
        i, q = answerable[int(rng.integers(len(answerable)))]
        j = int(rng.integers(len(passages) - 1))
        j += j >= i
        if any(a.text in passages[j].context for a in q.answers):
            continue
        extra.setdefault(j, []).append(Question(f"{q.id}-none-{k}", q.question, ()))
    return [Passage(p.id, p.context, p.questions + tuple(extra.get(i, ())), p.title) for i, p in enumerate(passages)]


def load_sets(spec: QASpec, cfg: TrainConfig) -> Sets:
    if cfg.synthetic > 0:
        generate = resolve(spec.synthetic)
        passages = generate(cfg.synthetic, seed=cfg.seed, unanswerable=cfg.no_answer)
        train, val = split_by_passage(passages, cfg.val_fraction)
        n_test = cfg.test_size or max(4, cfg.synthetic // 5)
        tests = {
            "test": generate(n_test, seed=cfg.test_seed, held_out=True, unanswerable=0.2),
            "real_filler": generate(n_test, seed=cfg.test_seed + 1, held_out=True, unanswerable=0.2, filler="real"),
        }
        source = (
            f"synthetic:{spec.synthetic}(n={cfg.synthetic}, seed={cfg.seed}, unanswerable={cfg.no_answer}; held-out "
            f"names, values and frames n={n_test}, seed={cfg.test_seed}, unanswerable=0.2; and the same with real "
            f"Korean filler sentences, seed={cfg.test_seed + 1})"
        )
        return Sets(train, val, tests, source)
    reading = read(cfg.data)
    if reading.problems:
        print(f"{cfg.data}: {len(reading.problems)} answers left out; first: {reading.problems[0]}")
    rest, test = split_by_passage(reading.passages, cfg.test_fraction)
    train, val = split_by_passage(rest, cfg.val_fraction / (1 - cfg.test_fraction))
    train = with_no_answers(train, cfg.no_answer, cfg.seed)
    return Sets(train, val, {"test": test}, f"{cfg.data} ({reading.n_questions} questions)")


@dataclass
class Feature:
    ids: np.ndarray  # (length,) int64
    start: int  # answer token positions in the window; (0, 0): no answer in this window
    end: int


def features(tokenizer, spec: QASpec, passages: list[Passage]) -> list[Feature]:
    out = []
    for p in tqdm(passages, desc="tokenise", unit="passage", leave=False):
        ctx = answering.tokenize_context(tokenizer, p.context)
        for q in p.questions:
            w = answering.encode(tokenizer, q.question, ctx, spec.max_length, spec.stride, spec.max_question_tokens)
            a = q.answers[0] if q.answers else None
            for ids, off in zip(w.ids, w.offsets, strict=True):
                s, e = answering.answer_tokens(off, a.start, a.end) if a else (0, 0)
                out.append(Feature(ids, s, e))
    return out


# ---- prediction and scores --------------------------------------------------------------------------------------


def logits_of(model: SpanModel, windows: list[np.ndarray], pad_id: int, batch_size: int = 32) -> list[tuple]:
    """Per window, its (start, end) logits (length,) from the PyTorch model."""
    from tasks.tagging import pad

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for s in range(0, len(windows), batch_size):
            chunk = windows[s : s + batch_size]
            ids, mask = pad(chunk, pad_id)
            sl, el = model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            out.extend(
                (a[: len(w)], b[: len(w)]) for w, a, b in zip(chunk, sl.cpu().numpy(), el.cpu().numpy(), strict=True)
            )
    return out


def predict(model: SpanModel, tokenizer, spec: QASpec, passages: list[Passage]) -> list[answering.Prediction]:
    """One prediction per question, in order (PyTorch; the same decoding as the service)."""
    encoded = []
    for p in passages:
        ctx = answering.tokenize_context(tokenizer, p.context)
        for q in p.questions:
            w = answering.encode(tokenizer, q.question, ctx, spec.max_length, spec.stride, spec.max_question_tokens)
            encoded.append((p.context, w))
    flat = [ids for _, w in encoded for ids in w.ids]
    logits = iter(logits_of(model, flat, tokenizer.pad_token_id))
    preds = []
    for context, w in encoded:
        pairs = [next(logits) for _ in w.ids]
        preds.append(
            answering.decode(
                context,
                w.offsets,
                [a for a, _ in pairs],
                [b for _, b in pairs],
                max_answer_tokens=spec.max_answer_tokens,
            )
        )
    return preds


def evaluate(model: SpanModel, tokenizer, spec: QASpec, passages: list[Passage], examples: int = 3) -> dict:
    """KorQuAD's and SQuAD's EM / F1 (percent) over the questions of ``passages``, and a few examples."""
    preds = predict(model, tokenizer, spec, passages)
    questions = [(p, q) for p in passages for q in p.questions]
    texts = [None if pr.no_answer else pr.answers[0].text for pr in preds]
    out: dict = answering.scores(texts, [[a.text for a in q.answers] for _, q in questions])
    out["passages"] = len(passages)
    out["examples"] = [
        {"question": q.question, "gold": [a.text for a in q.answers], "predicted": t}
        for (_, q), t in list(zip(questions, texts, strict=True))[:examples]
    ]
    return out


# ---- training ---------------------------------------------------------------------------------------------------


@dataclass
class QAResult:
    model: SpanModel
    tokenizer: object
    fit: FitResult
    metrics: dict  # "test" (KorQuAD EM / F1 on held-out synthetic passages) first, then the other held-out sets
    source: str
    sizes: dict[str, int]
    base: dict = field(default_factory=dict)

    def cleanup(self) -> None:
        """Nothing on disk to remove."""


def train(spec: QASpec, cfg: TrainConfig) -> QAResult:
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sets = load_sets(spec, cfg)
    texts = [t for p in sets.train + sets.val for t in (p.context, *(q.question for q in p.questions))]
    head = cfg.head or spec.head

    def make(folder: str) -> SpanModel:
        from transformers import AutoModel

        return SpanModel(AutoModel.from_pretrained(folder, add_pooling_layer=False), head)

    tokenizer, model, base = load_base_described(spec, cfg.base, texts, make=make)
    model.to(device)
    feats = features(tokenizer, spec, sets.train)
    rng = np.random.default_rng(cfg.seed)

    def batches():
        order = rng.permutation(len(feats))
        for n, s in enumerate(range(0, len(order), cfg.batch_size)):
            if cfg.limit_batches and n >= cfg.limit_batches:
                return
            yield [feats[i] for i in order[s : s + cfg.batch_size]]

    def loss_fn(m, batch: list[Feature]) -> tuple[torch.Tensor, int]:
        from tasks.tagging import pad

        ids, mask = pad([f.ids for f in batch], tokenizer.pad_token_id)
        sl, el = m(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        starts = torch.tensor([f.start for f in batch], device=device)
        ends = torch.tensor([f.end for f in batch], device=device)
        loss = (nn.functional.cross_entropy(sl, starts) + nn.functional.cross_entropy(el, ends)) / 2
        return loss, len(batch)

    def validate(m) -> dict[str, float]:
        got = evaluate(m, tokenizer, spec, sets.val, examples=0)
        return {"val_f1": got["f1"], "val_exact_match": got["exact_match"], "score": -got["f1"]}

    steps = -(-len(feats) // cfg.batch_size)
    if cfg.limit_batches:
        steps = min(steps, cfg.limit_batches)
    result = fit(
        model,
        batches,
        None,
        steps_per_epoch=steps,
        device=device,
        desc=spec.name,
        loss_fn=loss_fn,
        validate=validate,
        amp=device.type == "cuda",
        **schedule(cfg),
    )
    model.eval()
    metrics = {name: evaluate(model, tokenizer, spec, passages) for name, passages in sets.tests.items()}
    metrics["n"] = metrics["test"]["n"]
    sizes = {
        "train_passages": len(sets.train),
        "train_questions": sum(len(p.questions) for p in sets.train),
        "val_passages": len(sets.val),
        "windows": len(feats),
        **{f"{k}_questions": v["n"] for k, v in metrics.items() if isinstance(v, dict)},
    }
    base["head"] = head
    return QAResult(model.cpu().eval(), tokenizer, result, metrics, sets.source, sizes, base)
