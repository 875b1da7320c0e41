"""KsponSpeech (Korean spontaneous speech, AI Hub) and generic speech manifests.

KsponSpeech ships headerless 16 kHz, 16-bit, mono little-endian ``.pcm`` files, each with a transcript (a
sibling ``.txt`` in CP949, or a line ``path :: text`` of a ``.trn`` script file). Transcripts mark:
``(spelled)/(pronounced)`` dual transcriptions, noise tags ``b/`` (breath) ``l/`` (laughter) ``o/`` (overlap)
``n/`` (noise) ``u/`` (unintelligible), ``*`` (unclear word), ``+`` (repetition) and a ``/`` after fillers.
The conventional normalisation keeps the spelled form and drops tags and markers.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
DUAL = re.compile(r"\(([^()]*)\)/\(([^()]*)\)")
NOISE_TAG = re.compile(r"(?<!\S)[blonu]/")
FILLER_SLASH = re.compile(r"(?<=\S)/")


def normalize(text: str, form: str = "spelled") -> str:
    """A KsponSpeech transcript as training text: one form of each dual transcription, no tags or markers."""
    if form not in ("spelled", "pronounced"):
        raise ValueError("form must be 'spelled' or 'pronounced'")
    text = DUAL.sub(lambda m: m.group(1 if form == "spelled" else 2), text)
    text = NOISE_TAG.sub(" ", text)
    text = text.replace("*", " ").replace("+", " ")
    text = FILLER_SLASH.sub("", text)
    return " ".join(text.split())


def read_pcm(path: str | Path) -> np.ndarray:
    """Headerless 16-bit little-endian mono PCM -> float32 samples in [-1, 1) at 16 kHz."""
    raw = Path(path).read_bytes()
    if len(raw) % 2:
        raise ValueError(f"{path}: odd byte count, not 16-bit PCM")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def read_text(path: str | Path) -> str:
    """KsponSpeech transcripts are CP949; accept UTF-8 too (re-encoded copies are common)."""
    raw = Path(path).read_bytes()
    for encoding in ("utf-8", "cp949"):
        try:
            return raw.decode(encoding).strip()
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{path}: neither UTF-8 nor CP949 text")


def list_kspon(root: str | Path) -> list[tuple[Path, str]]:
    """(pcm path, normalised transcript) pairs from ``.trn`` script files under ``root`` or, without any, from
    ``.pcm`` files with sibling ``.txt`` transcripts. Utterances with an empty normalised transcript are left out."""
    root = Path(root)
    pairs: list[tuple[Path, str]] = []
    scripts = sorted(root.rglob("*.trn"))
    if scripts:
        for script in scripts:
            for line in read_text(script).splitlines():
                if "::" not in line:
                    continue
                rel, _, text = (part.strip() for part in line.partition("::"))
                path = _resolve(root, script.parent, rel)
                pairs.append((path, normalize(text)))
    else:
        for pcm in sorted(root.rglob("*.pcm")):
            txt = pcm.with_suffix(".txt")
            if not txt.is_file():
                raise FileNotFoundError(f"{pcm}: no transcript {txt.name} beside it")
            pairs.append((pcm, normalize(read_text(txt))))
    if not pairs:
        raise FileNotFoundError(f"{root}: no KsponSpeech .trn scripts or .pcm files")
    return [(p, t) for p, t in pairs if t]


def _resolve(root: Path, here: Path, rel: str) -> Path:
    """Script paths are relative to the corpus root (``KsponSpeech_01/...``) or to the script's folder."""
    for base in (root, here):
        candidate = base / rel
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{rel} (listed in a .trn script) is not under {root} or {here}")


def read_manifest(path: str | Path) -> list[tuple[Path, str]]:
    """A generic manifest: CSV with ``audio`` and ``text`` columns, or JSON lines ``{"audio": ..., "text": ...}``.
    Relative audio paths are relative to the manifest."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    pairs = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "audio" not in row or "text" not in row:
            raise ValueError(f"{path}: row {i + 1} needs 'audio' and 'text'")
        audio = Path(row["audio"])
        pairs.append((audio if audio.is_absolute() else path.parent / audio, str(row["text"]).strip()))
    return pairs
