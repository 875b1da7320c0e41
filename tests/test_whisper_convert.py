"""The CTranslate2 -> openai-whisper converter: the binary format, a complete name mapping, and the packaged
Whisper base giving the same transcript as faster-whisper on the original files."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np

from training.whisper_ct2 import read_ct2, to_openai


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], spec: str = "WhisperSpec") -> bytes:
    """Write CTranslate2's model.bin format (version 6) for the given variables."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, a in variables.items():
        out += string(name) + struct.pack("<B", a.ndim) + b"".join(struct.pack("<I", d) for d in a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += string(alias) + string(target)
    return out


def tiny_whisper(state: int = 64, vocab: int = 100, mels: int = 80, layers: int = 1) -> dict[str, np.ndarray]:
    """Every variable CTranslate2's WhisperSpec has, at toy sizes, float16 like the packaged model."""
    rng = np.random.default_rng(0)

    def f(*shape):
        return rng.normal(0, 0.02, shape).astype(np.float16)

    v = {
        "decoder/activation": np.array(1, np.int8),
        "decoder/alignment_heads": np.array(0, np.int16),
        "encoder/conv1/weight": f(state, mels, 3),
        "encoder/conv1/bias": f(state),
        "encoder/conv2/weight": f(state, state, 3),
        "encoder/conv2/bias": f(state),
        "encoder/position_encodings/encodings": f(30, state),
        "decoder/position_encodings/encodings": f(16, state),
        "decoder/embeddings/weight": f(vocab, state),
    }
    for side in ("encoder", "decoder"):
        v[f"{side}/layer_norm/gamma"], v[f"{side}/layer_norm/beta"] = f(state), f(state)
        for i in range(layers):
            p = f"{side}/layer_{i}"
            blocks = {"self_attention": [3 * state, state]} | ({"attention": None} if side == "decoder" else {})
            for block in blocks:
                v[f"{p}/{block}/layer_norm/gamma"], v[f"{p}/{block}/layer_norm/beta"] = f(state), f(state)
            v[f"{p}/self_attention/linear_0/weight"], v[f"{p}/self_attention/linear_0/bias"] = (
                f(3 * state, state),
                f(3 * state),
            )
            v[f"{p}/self_attention/linear_1/weight"], v[f"{p}/self_attention/linear_1/bias"] = f(state, state), f(state)
            if side == "decoder":
                v[f"{p}/attention/linear_0/weight"], v[f"{p}/attention/linear_0/bias"] = f(state, state), f(state)
                v[f"{p}/attention/linear_1/weight"], v[f"{p}/attention/linear_1/bias"] = (
                    f(2 * state, state),
                    f(2 * state),
                )
                v[f"{p}/attention/linear_2/weight"], v[f"{p}/attention/linear_2/bias"] = f(state, state), f(state)
            v[f"{p}/ffn/layer_norm/gamma"], v[f"{p}/ffn/layer_norm/beta"] = f(state), f(state)
            v[f"{p}/ffn/linear_0/weight"], v[f"{p}/ffn/linear_0/bias"] = f(4 * state, state), f(4 * state)
            v[f"{p}/ffn/linear_1/weight"], v[f"{p}/ffn/linear_1/bias"] = f(state, 4 * state), f(state)
    return v


def test_reads_the_binary_format_with_aliases(tmp_path):
    variables = tiny_whisper()
    path = tmp_path / "model.bin"
    path.write_bytes(ct2_bytes(variables, {"decoder/projection/weight": "decoder/embeddings/weight"}))
    spec, read = read_ct2(path)
    assert spec == "WhisperSpec" and set(read) == set(variables) | {"decoder/projection/weight"}
    for name, a in variables.items():
        assert read[name].dtype == a.dtype and np.array_equal(read[name], a)
    assert read["decoder/projection/weight"] is read["decoder/embeddings/weight"]


def test_mapping_fills_every_openai_whisper_parameter_and_splits_fused_projections():
    import torch
    from whisper.model import ModelDimensions, Whisper

    v = tiny_whisper()
    ckpt = to_openai(v)
    model = Whisper(ModelDimensions(**ckpt["dims"]))
    missing, unexpected = model.load_state_dict(ckpt["model_state_dict"], strict=False)
    assert unexpected == [] and missing == []  # every parameter and buffer mapped, nothing left over
    qkv = torch.from_numpy(v["decoder/layer_0/self_attention/linear_0/weight"].astype(np.float32))
    assert torch.equal(model.decoder.blocks[0].attn.key.weight, qkv[64:128])
    assert model.decoder.blocks[0].attn.key.bias is None  # Whisper's key projection has no bias
    kv = torch.from_numpy(v["decoder/layer_0/attention/linear_1/weight"].astype(np.float32))
    assert torch.equal(model.decoder.blocks[0].cross_attn.value.weight, kv[64:])


def test_packaged_base_transcribes_like_faster_whisper(tmp_path):
    """Same audio, same greedy decoding: the converted checkpoint in openai-whisper and the original files in
    faster-whisper give the same text."""
    import whisper
    from faster_whisper import WhisperModel

    from training.whisper_ct2 import convert, packaged_model_dir

    ct2_dir = packaged_model_dir(tmp_path / "cache")
    convert(ct2_dir, tmp_path / "base.pt")
    wav = tmp_path / "clip.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en",
            "-s",
            "150",
            "-w",
            str(wav),
            "The patient's blood pressure was measured in the morning.",
        ],
        check=True,
    )
    audio = whisper.load_audio(str(wav))
    ours = whisper.load_model(str(tmp_path / "base.pt"), device="cpu").transcribe(
        audio, language="en", temperature=0.0, beam_size=1, condition_on_previous_text=False, fp16=False
    )["text"]
    segments, _ = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32").transcribe(
        audio, language="en", temperature=0.0, beam_size=1, condition_on_previous_text=False, vad_filter=False
    )
    theirs = "".join(s.text for s in segments)
    assert ours.strip() == theirs.strip()
    assert "blood pressure" in ours.lower()


def test_export_back_to_ctranslate2_round_trips(tmp_path):
    """openai-whisper checkpoint -> CTranslate2 (the fine-tuned model's fast path): the same variables as the
    original files, and faster-whisper transcribes with it exactly as with the original."""
    import torch

    from exporters.whisper import save_ct2
    from training.whisper_ct2 import convert, packaged_model_dir

    base = packaged_model_dir(tmp_path / "cache")
    convert(base, tmp_path / "base.pt")
    save_ct2(torch.load(tmp_path / "base.pt", map_location="cpu"), base, tmp_path / "ct2")
    _, original = read_ct2(base / "model.bin")
    _, ours = read_ct2(tmp_path / "ct2" / "model.bin")
    weights = [k for k, v in original.items() if v.dtype.kind == "f" and v.ndim > 0]
    assert set(weights) <= set(ours)
    for k in weights:
        assert np.array_equal(ours[k].astype(np.float16), original[k]), k


def test_cli_explains_a_wrong_folder(tmp_path):
    (tmp_path / "model.bin").write_bytes(ct2_bytes({"x": np.zeros(2, np.float32)}, {}, spec="TransformerSpec"))
    r = subprocess.run(
        [sys.executable, "-m", "training.whisper_ct2", "--ct2", str(tmp_path), "--out", str(tmp_path / "o.pt")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not a CTranslate2 Whisper model" in r.stderr
