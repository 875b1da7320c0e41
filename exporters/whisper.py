"""An openai-whisper checkpoint (e.g. fine-tuned) -> a CTranslate2 model folder that faster-whisper loads.

The inverse of :mod:`training.whisper_ct2`: q/k/v projections fused again (a zero bias for Whisper's bias-free
key projection), cross-attention k/v fused. Vocabulary, tokenizer and decoding config (suppressed tokens,
language ids, alignment heads) come from the CTranslate2 base the model was fine-tuned from: fine-tuning does
not change them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from exporters.validate import ParityError


def ct2_variables(state: dict) -> dict[str, np.ndarray]:
    """openai-whisper state dict -> CTranslate2 WhisperSpec variable names and float32 arrays."""
    s = {k: v.detach().float().cpu().numpy() for k, v in state.items()}
    out: dict[str, np.ndarray] = {}

    def ln(src: str, dst: str) -> None:
        out[dst + "/gamma"], out[dst + "/beta"] = s[src + ".weight"], s[src + ".bias"]

    def linear(src: str, dst: str) -> None:
        out[dst + "/weight"], out[dst + "/bias"] = s[src + ".weight"], s[src + ".bias"]

    def fused(srcs: list[str], dst: str) -> None:
        out[dst + "/weight"] = np.concatenate([s[p + ".weight"] for p in srcs])
        out[dst + "/bias"] = np.concatenate(
            [s.get(p + ".bias", np.zeros(s[p + ".weight"].shape[0], np.float32)) for p in srcs]
        )

    for i in (1, 2):
        linear(f"encoder.conv{i}", f"encoder/conv{i}")
    out["encoder/position_encodings/encodings"] = s["encoder.positional_embedding"]
    for side in ("encoder", "decoder"):
        n = len({k.split(".")[2] for k in s if k.startswith(f"{side}.blocks.")})
        for i in range(n):
            src, dst = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            ln(f"{src}.attn_ln", f"{dst}/self_attention/layer_norm")
            fused([f"{src}.attn.query", f"{src}.attn.key", f"{src}.attn.value"], f"{dst}/self_attention/linear_0")
            linear(f"{src}.attn.out", f"{dst}/self_attention/linear_1")
            if side == "decoder":
                ln(f"{src}.cross_attn_ln", f"{dst}/attention/layer_norm")
                linear(f"{src}.cross_attn.query", f"{dst}/attention/linear_0")
                fused([f"{src}.cross_attn.key", f"{src}.cross_attn.value"], f"{dst}/attention/linear_1")
                linear(f"{src}.cross_attn.out", f"{dst}/attention/linear_2")
            ln(f"{src}.mlp_ln", f"{dst}/ffn/layer_norm")
            linear(f"{src}.mlp.0", f"{dst}/ffn/linear_0")
            linear(f"{src}.mlp.2", f"{dst}/ffn/linear_1")
    ln("encoder.ln_post", "encoder/layer_norm")
    out["decoder/embeddings/weight"] = s["decoder.token_embedding.weight"]
    out["decoder/position_encodings/encodings"] = s["decoder.positional_embedding"]
    ln("decoder.ln", "decoder/layer_norm")
    out["decoder/projection/weight"] = s["decoder.token_embedding.weight"]  # tied, as in Whisper
    return out


def _set(spec, name: str, value: np.ndarray) -> None:
    obj = spec
    *path, leaf = name.split("/")
    for part in path:
        if hasattr(obj, part):  # ffn.linear_0 is an attribute ...
            obj = getattr(obj, part)
        else:  # ... but attention's linear_0 and the encoder's layer_0 are list items
            head, _, index = part.rpartition("_")
            obj = getattr(obj, head)[int(index)]
    setattr(obj, leaf, value)


def save_ct2(
    checkpoint: dict,
    base_dir: Path,
    out_dir: Path,
    quantization: str = "float32",
    alignment_heads: list[list[int]] | None = None,
) -> None:
    """Write ``out_dir`` (model.bin, config.json, vocabulary, tokenizer) for faster-whisper. ``alignment_heads``
    (the cross-attention heads word timestamps read) replace the base's when the model has another size."""
    from ctranslate2.specs import whisper_spec

    dims = checkpoint["dims"]
    spec = whisper_spec.WhisperSpec(
        dims["n_audio_layer"], dims["n_audio_head"], dims["n_text_layer"], dims["n_text_head"]
    )
    for name, value in ct2_variables(checkpoint["model_state_dict"]).items():
        _set(spec, name, value)
    config = json.loads((base_dir / "config.json").read_text())
    if alignment_heads is not None:
        config["alignment_heads"] = alignment_heads
    for key, value in config.items():
        setattr(spec.config, key, value)
    spec.register_vocabulary((base_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[: dims["n_vocab"]])
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    shutil.copyfile(base_dir / "tokenizer.json", out_dir / "tokenizer.json")


def alignment_heads_for(base: str, dims: dict) -> list[list[int]] | None:
    """The base's alignment heads when known (the packaged base's config has them; openai-whisper names carry
    theirs), else CTranslate2's default: every head of the second half of the decoder."""
    import base64
    import gzip

    import whisper

    if base == "packaged":
        return None
    name = Path(base).stem if Path(base).is_file() else base
    n, h = dims["n_text_layer"], dims["n_text_head"]
    if name in whisper._ALIGNMENT_HEADS:
        mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool)
        if mask.size == n * h:
            return [[int(i // h), int(i % h)] for i in np.flatnonzero(mask)]
    return [[layer, head] for layer in range(n // 2, n) for head in range(h)]


def export_speech(spec, entry, n: int = 16, device: str = "cpu") -> dict:
    """``model.pt`` -> ``ct2/`` (float16 weights) in the same entry, then the same held-out clips through
    openai-whisper's ``transcribe`` and faster-whisper: their CERs against the references may differ by at most
    ``spec.export_max_cer_diff`` points. Short audio contexts are served only when they pass that check (a model
    fine-tuned by :mod:`training.asr` learns them; a base model does not), else 30-second windows."""
    import torch
    import whisper

    from tasks.spec import resolve
    from tasks.speech import fast_model, fast_transcribe, torch_transcribe
    from tasks.store import record, sha256_file, verified_file
    from training.asr import cer
    from training.whisper_ct2 import packaged_model_dir

    meta = entry.info.metadata
    checkpoint = torch.load(verified_file(entry, "model.pt"), map_location="cpu", weights_only=True)
    base = meta.get("training", {}).get("base", spec.base)
    out = Path(entry.path) / "ct2"
    shutil.rmtree(out, ignore_errors=True)
    base_dir = packaged_model_dir(Path.home() / ".cache" / "inference-suite")
    save_ct2(checkpoint, base_dir, out, "float16", alignment_heads_for(base, checkpoint["dims"]))
    try:
        audio, refs = resolve(spec.synthetic)(n, seed=meta["config"]["test_seed"] + 1, held_out=True)
        reference = whisper.load_model(str(verified_file(entry, "model.pt")), device=device)
        t0 = time.perf_counter()
        slow_hyps = [torch_transcribe(reference, a, spec.language) for a in audio]
        report = {"n_clips": len(audio), "cer_pytorch": round(cer(refs, slow_hyps), 4)}
        report["seconds_pytorch"] = round(time.perf_counter() - t0, 2)
        for short in (True, False):
            fast, backend = fast_model(out, spec, device, short=short)
            t0 = time.perf_counter()
            fast_hyps = [fast_transcribe(fast, a, spec.language)[0] for a in audio]
            seconds = round(time.perf_counter() - t0, 2)
            score = round(cer(refs, fast_hyps), 4)
            points = round(abs(score - report["cer_pytorch"]) * 100, 2)
            report["cer_short_context" if short else "cer_window"] = score
            if points <= spec.export_max_cer_diff:
                identical = sum(a == b for a, b in zip(slow_hyps, fast_hyps, strict=True))
                report.update(backend=backend, short_context=short, cer_fast=score, seconds_fast=seconds)
                report.update(max_abs_diff=points, atol=spec.export_max_cer_diff, identical_transcripts=identical)
                break
            print(f"{backend}: CER {score:.4f} vs {report['cer_pytorch']:.4f} with PyTorch ({points:.2f} points)")
        else:
            raise ParityError(
                f"CER with CTranslate2 ({report['cer_short_context']:.4f} short contexts, "
                f"{report['cer_window']:.4f} 30-second windows) vs {report['cer_pytorch']:.4f} with PyTorch: more "
                f"than {spec.export_max_cer_diff} points apart"
            )
    except Exception:
        shutil.rmtree(out, ignore_errors=True)
        if "export_ct2" in meta:  # an earlier export's record no longer describes what is on disk
            del meta["export_ct2"]
            meta["files"] = {k: v for k, v in meta.get("files", {}).items() if not k.startswith("ct2/")}
            entry.flush()
        raise
    files = {f"ct2/{p.name}": sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    record(entry, "export_ct2", {**report, "dir": "ct2", "quantization": "float16"}, files=files)
    return report
