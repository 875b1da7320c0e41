"""Benchmark of a question-answering task: floors in process, then the service over HTTP.

Floors: ONNX Runtime and PyTorch eager from (question, context) (one question or 32 at a time, cycling through the
same held-out questions as the service: tokenise, windows, model, decoding; everything the service does but HTTP).
Each path's KorQuAD EM / F1 on those questions beside its latency. (transformers 5 removed its extractive
``question-answering`` pipeline, the peer the task names: ``pipeline("question-answering")`` raises KeyError.)
Service: concurrency 1 / 8 / 32 with adaptive batching on and off.
"""

from __future__ import annotations

import json

import numpy as np

from benchmarks.harness import find, floor_batches, time_calls
from benchmarks.report import row
from tasks import answering
from tasks.spec import QASpec, resolve
from tasks.tagging import pad

ROUTE = "answer"
CONTENT_TYPE = "application/json"


def sample_pairs(spec: QASpec, n: int = 32) -> list[tuple[str, str, list[str]]]:
    """(question, context, gold answers) of held-out synthetic passages (names, values and frames training never
    saw; a fifth unanswerable)."""
    passages = resolve(spec.synthetic)(n, seed=987_654, held_out=True)
    pairs = [(q.question, p.context, [a.text for a in q.answers]) for p in passages for q in p.questions]
    return pairs[:n]


def sample_bodies(spec: QASpec, n: int = 32) -> list[bytes]:
    """The held-out questions as a client sends them: ``{"question", "context"}``."""
    return [json.dumps({"question": q, "context": c}, ensure_ascii=False).encode() for q, c, _ in sample_pairs(spec, n)]


def _answers(spec: QASpec, tokenizer, run, pairs, batch: int) -> list[str | None]:
    """Answer ``pairs`` ``batch`` questions per model call with ``run(ids, mask) -> (start, end)``."""
    out: list[str | None] = []
    for s in range(0, len(pairs), batch):
        chunk = pairs[s : s + batch]
        encoded = [
            answering.encode(tokenizer, q, c, spec.max_length, spec.stride, spec.max_question_tokens)
            for q, c, _ in chunk
        ]
        windows = [ids for w in encoded for ids in w.ids]
        start, end = run(*pad(windows, tokenizer.pad_token_id))
        k = 0
        for (_, context, _), w in zip(chunk, encoded, strict=True):
            n = len(w.ids)
            sl = [start[k + i, : len(ids)] for i, ids in enumerate(w.ids)]
            el = [end[k + i, : len(ids)] for i, ids in enumerate(w.ids)]
            k += n
            p = answering.decode(context, w.offsets, sl, el, max_answer_tokens=spec.max_answer_tokens)
            out.append(None if p.no_answer else p.answers[0].text)
    return out


def floor_rows(spec: QASpec, entry, bodies: list[bytes], device: str, seconds: float) -> list[dict]:
    import torch

    from exporters.qa import OnnxSpans
    from tasks.store import verified_file
    from training.qa import load_model

    tokenizer, model = load_model(str(entry.path))
    model.to(device)
    docs = [json.loads(b) for b in bodies]
    golds = {(q, c): g for q, c, g in sample_pairs(spec, len(bodies))}  # the bodies are sample_bodies(spec, n)
    if any((d["question"], d["context"]) not in golds for d in docs):
        raise ValueError("the QA floor scores the questions sample_bodies(spec, n) makes, and only those")
    pairs = [(d["question"], d["context"], golds[(d["question"], d["context"])]) for d in docs]

    def torch_run(ids: np.ndarray, mask: np.ndarray):
        with torch.inference_mode():
            s, e = model(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            return s.cpu().numpy(), e.cpu().numpy()

    onnx = OnnxSpans(verified_file(entry, "model.onnx"), device)
    rows = []
    for name, run in ((f"onnxruntime/{onnx.device}", onnx), (f"pytorch/{device}", torch_run)):
        quality = answering.scores(_answers(spec, tokenizer, run, pairs, 8), [g for *_, g in pairs])
        for batch in floor_batches(32):
            turn = iter(range(10**9))

            def step(batch=batch, run=run, turn=turn) -> None:
                first = next(turn) * batch  # other questions each call, as the service sees them
                _answers(spec, tokenizer, run, [pairs[(first + i) % len(pairs)] for i in range(batch)], batch)

            lat = time_calls(step, seconds)
            rows.append(
                row("floor", name, batch, 1, lat, batch / float(np.mean(lat)), input="question+context",
                    exact_match=round(quality["exact_match"], 2), f1=round(quality["f1"], 2))
            )  # fmt: skip
            print(f"floor {name:22s} batch {batch:2d} p50 {rows[-1]['p50_ms']:8.2f} ms  F1 {quality['f1']:.1f}")

    return rows


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    onnx = next(r["backend"] for r in rows if r["backend"].startswith("onnxruntime") and r["path"] == "floor")
    torch = next(r["backend"] for r in rows if r["backend"].startswith("pytorch"))
    o, t = find(rows, path="floor", backend=onnx, batch=1), find(rows, path="floor", backend=torch, batch=1)
    s1 = find(rows, path="service", concurrency=1, batching=True)
    cmax = max(concurrencies)
    on = find(rows, path="service", concurrency=cmax, batching=True)
    off = find(rows, path="service", concurrency=cmax, batching=False)
    return [
        f"service p50 at concurrency 1 / in-process ONNX floor, one question: {s1['p50_ms'] / o['p50_ms']:.2f}x "
        f"({s1['p50_ms']:.2f} / {o['p50_ms']:.2f} ms)",
        f"ONNX Runtime vs PyTorch eager, one question: {t['p50_ms'] / o['p50_ms']:.2f}x faster",
        f"KorQuAD EM / F1 on the same questions: ONNX {o['exact_match']:.1f} / {o['f1']:.1f}, PyTorch "
        f"{t['exact_match']:.1f} / {t['f1']:.1f}",
        f"throughput at concurrency {cmax}, adaptive batching on / off: "
        f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
        f"({on['throughput_per_s']:.0f} / {off['throughput_per_s']:.0f} req/s)",
        "questions: held-out synthetic Korean passages (names, values and sentence frames training never saw)",
        "the load generator runs on the same machine as the server and takes part of its CPU",
    ]
