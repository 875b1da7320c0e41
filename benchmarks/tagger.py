"""Benchmark of a token-tagging task: floors in process, then the service over HTTP.

Floors: ONNX Runtime and PyTorch eager, from text (one abstract or 32 at a time, cycling through the same
abstracts as the service; tokenise, windows, model, spans, ranking: everything the service does but HTTP) and
from ready token ids (one or 32 windows of 256 tokens: the model alone). Service: concurrency 1 / 8 / 32 with
adaptive batching on and off, the same held-out abstracts.
"""

from __future__ import annotations

import numpy as np

from benchmarks.harness import find, floor_batches, time_calls
from benchmarks.report import row
from tasks import tagging
from tasks.spec import TaggerSpec, resolve

ROUTE = "extract"
CONTENT_TYPE = "text/plain; charset=utf-8"


def sample_texts(spec: TaggerSpec, n: int = 32) -> list[bytes]:
    """Held-out synthetic abstracts (English and Korean), as a client sends them."""
    return [d.text.encode() for d in resolve(spec.synthetic)(n, seed=987_654, held_out=True)]


def floor_rows(spec: TaggerSpec, entry, texts: list[bytes], device: str, seconds: float) -> list[dict]:
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from exporters.tagger import OnnxTagger
    from tasks.store import verified_file

    tokenizer = AutoTokenizer.from_pretrained(str(entry.path))
    model = AutoModelForTokenClassification.from_pretrained(str(entry.path)).eval().to(device)

    def torch_run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            return torch.softmax(out.logits, -1).cpu().numpy()

    onnx = OnnxTagger(verified_file(entry, "model.onnx"), device)
    decoded = [t.decode() for t in texts]
    rows = []
    for name, run in ((f"onnxruntime/{onnx.device}", onnx), (f"pytorch/{device}", torch_run)):
        for batch in floor_batches(32):
            ids = np.full((batch, spec.max_length), 1000, np.int64)  # a full window of ordinary tokens
            mask = np.ones_like(ids)
            turn = iter(range(10**9))

            def from_text(batch=batch, run=run, turn=turn) -> None:
                first = next(turn) * batch  # a different abstract each call, as the service sees them
                chunk = [decoded[(first + i) % len(decoded)] for i in range(batch)]
                encoded = [tagging.encode(tokenizer, t, spec.max_length, spec.stride) for t in chunk]
                windows = [w for e in encoded for w in e.ids]
                probs = run(*tagging.pad(windows, tokenizer.pad_token_id))
                at = 0
                for t, e in zip(chunk, encoded, strict=True):
                    merged = tagging.merge_windows(e, [p[: len(w)] for p, w in zip(probs[at:], e.ids, strict=False)])
                    at += len(e.ids)
                    tagging.rank(tagging.spans(t, e.offsets, merged))

            for kind, step in (("text", from_text), ("tokens", lambda ids=ids, mask=mask, run=run: run(ids, mask))):
                lat = time_calls(step, seconds)
                rows.append(row("floor", name, batch, 1, lat, batch / float(np.mean(lat)), input=kind))
                print(f"floor {name:22s} batch {batch:2d} {kind:6s} p50 {rows[-1]['p50_ms']:8.2f} ms")
    return rows


def summary(rows: list[dict], concurrencies: list[int]) -> list[str]:
    onnx = next(r["backend"] for r in rows if r["backend"].startswith("onnxruntime") and r["path"] == "floor")
    torch = next(r["backend"] for r in rows if r["backend"].startswith("pytorch"))
    o = find(rows, path="floor", backend=onnx, batch=1, input="tokens")
    t = find(rows, path="floor", backend=torch, batch=1, input="tokens")
    o_text = find(rows, path="floor", backend=onnx, batch=1, input="text")
    s1 = find(rows, path="service", concurrency=1, batching=True)
    cmax = max(concurrencies)
    on = find(rows, path="service", concurrency=cmax, batching=True)
    off = find(rows, path="service", concurrency=cmax, batching=False)
    return [
        f"ONNX Runtime vs PyTorch eager, model alone, one 256-token window: {t['p50_ms'] / o['p50_ms']:.2f}x faster "
        f"({o['p50_ms']:.2f} vs {t['p50_ms']:.2f} ms)",
        f"service p50 at concurrency 1 / in-process ONNX from text: {s1['p50_ms'] / o_text['p50_ms']:.2f}x "
        f"({s1['p50_ms']:.2f} / {o_text['p50_ms']:.2f} ms)",
        f"throughput at concurrency {cmax}, adaptive batching on / off: "
        f"{on['throughput_per_s'] / off['throughput_per_s']:.2f}x "
        f"({on['throughput_per_s']:.0f} / {off['throughput_per_s']:.0f} req/s)",
        "texts: held-out synthetic abstracts, English and Korean (Korean becomes about three tokens a syllable)",
        "the load generator runs on the same machine as the server and takes part of its CPU",
    ]
