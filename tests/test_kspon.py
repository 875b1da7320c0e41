"""KsponSpeech and manifest loaders, on fixtures written in the real formats (CP949 text, headerless PCM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.datasets.kspon import list_kspon, normalize, read_manifest, read_pcm

# Lines in the style of the corpus: dual transcriptions, noise tags, unclear-word and repetition markers.
CASES = [
    ("o/ 그래서 (3학년)/(삼 학년) 때 b/ 뭐 했냐면", "그래서 3학년 때 뭐 했냐면", "그래서 삼 학년 때 뭐 했냐면"),
    ("n/ 어/ 그게 (70%)/(칠십 퍼센트) 정도* l/", "어 그게 70% 정도", "어 그게 칠십 퍼센트 정도"),
    ("아+ 아니 u/ 그냥 그냥+ 가자", "아 아니 그냥 그냥 가자", "아 아니 그냥 그냥 가자"),
    ("b/ n/ l/", "", ""),
]


@pytest.mark.parametrize("raw, spelled, pronounced", CASES)
def test_normalisation_keeps_the_chosen_form_and_drops_tags(raw, spelled, pronounced):
    assert normalize(raw) == spelled
    assert normalize(raw, "pronounced") == pronounced


def test_normalisation_keeps_ordinary_slashes_inside_words_out():
    assert normalize("b/ 그/ 그거 n/") == "그 그거"
    with pytest.raises(ValueError):
        normalize("x", "phonetic")


def write_utterance(folder, name, samples: np.ndarray, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pcm").write_bytes(samples.astype("<i2").tobytes())
    (folder / f"{name}.txt").write_bytes(text.encode("cp949"))


def test_pcm_and_cp949_transcripts(tmp_path):
    tone = (np.sin(np.arange(1600) / 16000 * 2 * np.pi * 440) * 12000).astype(np.int16)
    d = tmp_path / "KsponSpeech_01" / "KsponSpeech_0001"
    write_utterance(d, "KsponSpeech_000001", tone, CASES[0][0])
    write_utterance(d, "KsponSpeech_000002", tone[:800], CASES[3][0])  # only tags: left out
    audio = read_pcm(d / "KsponSpeech_000001.pcm")
    assert audio.dtype == np.float32 and len(audio) == 1600 and 0.35 < np.abs(audio).max() < 0.37
    pairs = list_kspon(tmp_path)
    assert pairs == [(d / "KsponSpeech_000001.pcm", CASES[0][1])]
    (d / "bad.pcm").write_bytes(b"\x00\x01\x02")
    with pytest.raises(FileNotFoundError, match="no transcript"):
        list_kspon(tmp_path)


def test_trn_scripts(tmp_path):
    d = tmp_path / "KsponSpeech_01" / "KsponSpeech_0001"
    write_utterance(d, "KsponSpeech_000001", np.zeros(160, np.int16), "unused")
    script = tmp_path / "scripts" / "train.trn"
    script.parent.mkdir()
    line = f"KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: {CASES[1][0]}\n"
    script.write_bytes(line.encode("cp949"))
    assert list_kspon(tmp_path) == [(d / "KsponSpeech_000001.pcm", CASES[1][1])]
    script.write_bytes(b"KsponSpeech_01/missing.pcm :: x\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.pcm"):
        list_kspon(tmp_path)


def test_manifests_csv_and_jsonl(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.csv").write_text("audio,text\na.wav,안녕하세요\n/abs/b.wav,감사합니다\n", encoding="utf-8")
    assert read_manifest(tmp_path / "m.csv") == [(tmp_path / "a.wav", "안녕하세요"), (Path("/abs/b.wav"), "감사합니다")]
    lines = [json.dumps({"audio": "a.wav", "text": "네"}, ensure_ascii=False)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_manifest(tmp_path / "m.jsonl") == [(tmp_path / "a.wav", "네")]
    (tmp_path / "bad.jsonl").write_text('{"audio": "a.wav"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="row 1"):
        read_manifest(tmp_path / "bad.jsonl")
