"""An openai-whisper checkpoint (e.g. fine-tuned) -> a CTranslate2 model folder that faster-whisper loads.

The inverse of :mod:`training.whisper_ct2`: q/k/v projections fused again (a zero bias for Whisper's bias-free
key projection), cross-attention k/v fused. Vocabulary, tokenizer and decoding config (suppressed tokens,
language ids, alignment heads) come from the CTranslate2 base the model was fine-tuned from: fine-tuning does
not change them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np


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


def save_ct2(checkpoint: dict, base_dir: Path, out_dir: Path, quantization: str = "float32") -> None:
    """Write ``out_dir`` (model.bin, config.json, vocabulary, tokenizer) for faster-whisper."""
    from ctranslate2.specs import whisper_spec

    dims = checkpoint["dims"]
    spec = whisper_spec.WhisperSpec(
        dims["n_audio_layer"], dims["n_audio_head"], dims["n_text_layer"], dims["n_text_head"]
    )
    for name, value in ct2_variables(checkpoint["model_state_dict"]).items():
        _set(spec, name, value)
    config = json.loads((base_dir / "config.json").read_text())
    for key, value in config.items():
        setattr(spec.config, key, value)
    spec.register_vocabulary((base_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[: dims["n_vocab"]])
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    shutil.copyfile(base_dir / "tokenizer.json", out_dir / "tokenizer.json")
