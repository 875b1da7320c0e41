"""ONNX export of span models (extractive QA): inputs ``input_ids`` and ``attention_mask`` (N, L) int64 with N and
L dynamic, outputs ``start_logits`` and ``end_logits`` (N, L) float32 (padding -1e4), checked against PyTorch on
the windows of held-out questions: logits within the tolerance and the same decoded answer for every question."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters.onnx import set_metadata
from exporters.tagger import OnnxTagger
from exporters.validate import ParityError
from tasks import answering
from tasks.spec import QASpec
from tasks.tagging import pad

OPSET = 17
INPUTS, OUTPUTS = ("input_ids", "attention_mask"), ("start_logits", "end_logits")


def export_onnx(model, spec: QASpec, tag: str, path: Path) -> None:
    import torch

    example = (torch.ones(2, 16, dtype=torch.long), torch.ones(2, 16, dtype=torch.long))
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        model.eval(),
        example,
        str(path),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes=dict.fromkeys((*INPUTS, *OUTPUTS), axes),
        opset_version=OPSET,
        dynamo=False,
    )
    props = {
        "task": spec.name,
        "model_tag": tag,
        "head": model.head,
        "max_length": str(spec.max_length),
        "stride": str(spec.stride),
        "max_question_tokens": str(spec.max_question_tokens),
        "max_answer_tokens": str(spec.max_answer_tokens),
    }
    set_metadata(path, props)


class OnnxSpans(OnnxTagger):
    """(ids, mask) int64 (N, L) -> (start, end) logits (N, L) float32 with ONNX Runtime (the tagger's session)."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.session.run(list(OUTPUTS), {INPUTS[0]: ids, INPUTS[1]: mask})
        return start, end


def validate(model, path: Path, tokenizer, questions: list[tuple[str, str]], spec: QASpec, atol: float) -> dict:
    """The windows of ``questions`` ((question, context) pairs) in batches of 1 and 7: max |logit_onnx -
    logit_torch| over real tokens within ``atol`` and the same decoded answer (or no answer) for every question,
    or :class:`ParityError`."""
    import torch

    runner = OnnxSpans(path)
    encoded = [
        (c, answering.encode(tokenizer, q, c, spec.max_length, spec.stride, spec.max_question_tokens))
        for q, c in questions
    ]
    windows = [ids for _, w in encoded for ids in w.ids]
    worst, n_tokens = 0.0, 0
    got_logits: list[tuple[np.ndarray, np.ndarray]] = []
    ref_logits: list[tuple[np.ndarray, np.ndarray]] = []
    for size in (1, 7):
        got_logits.clear()
        ref_logits.clear()
        for s in range(0, len(windows), size):
            chunk = windows[s : s + size]
            ids, mask = pad(chunk, tokenizer.pad_token_id)
            with torch.inference_mode():
                ref = [t.numpy() for t in model(torch.from_numpy(ids), torch.from_numpy(mask))]
            got = runner(ids, mask)
            real = mask.astype(bool)
            worst = max(worst, *(float(np.abs(g - r)[real].max()) for g, r in zip(got, ref, strict=True)))
            n_tokens += int(real.sum())
            for i, w in enumerate(chunk):
                got_logits.append((got[0][i, : len(w)], got[1][i, : len(w)]))
                ref_logits.append((ref[0][i, : len(w)], ref[1][i, : len(w)]))
    changed, k = 0, 0
    for context, w in encoded:  # the answers of the last pass (batches of 7), decoded as the service decodes
        answers = []
        for logits in (got_logits, ref_logits):
            part = logits[k : k + len(w.ids)]
            p = answering.decode(context, w.offsets, [a for a, _ in part], [b for _, b in part])
            answers.append(None if p.no_answer else (p.answers[0].start, p.answers[0].end))
        changed += answers[0] != answers[1]
        k += len(w.ids)
    report = {
        "max_abs_diff": worst,
        "atol": atol,
        "changed_answers": changed,
        "n_questions": len(questions),
        "n_windows": len(windows),
        "n_tokens": n_tokens,
    }
    if worst > atol or changed:
        raise ParityError(
            f"ONNX differs from PyTorch: max |dlogit| {worst:.2e} (tolerance {atol:g}), {changed} answers"
        )
    return report
