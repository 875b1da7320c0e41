"""The speech service against a real ``bentoml serve``: a store entry built by the CLIs (the packaged Whisper base,
one fine-tuning step on synthetic Korean speech, CTranslate2 export with its parity check), every audio format
through ffmpeg, 30-second windows, word timestamps, silence, and every bad input as a 4xx."""

from __future__ import annotations

import base64
import os
import subprocess

import httpx
import numpy as np
import pytest

from benchmarks.server import start_server, stop_server
from benchmarks.speech import wav_bytes as speech_wav
from tests.conftest import entry_metadata, png_bytes

pytestmark = pytest.mark.http
ROUTE = "/v1/asr/transcribe"
SR = 16_000


@pytest.fixture(scope="module")
def client(asr_store):
    proc, url, _ = start_server("asr", {"max_audio_s": 45, "max_body_mb": 4}, env=asr_store)
    with httpx.Client(base_url=url, timeout=300) as c:
        yield c
    stop_server(proc)


def wav_bytes(audio: np.ndarray) -> bytes:
    return speech_wav(audio, SR)


def encode(wav: bytes, fmt: str) -> bytes:
    """The same audio in another container / codec, by ffmpeg, written as a file (an m4a's index then sits at
    its end, as phones write them)."""
    import tempfile

    codec = {"webm": ["-c:a", "libopus"], "m4a": ["-c:a", "aac"], "ogg": ["-c:a", "libvorbis"]}.get(fmt, [])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"clip.{fmt}")
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", "pipe:0", *codec, out], input=wav, check=True)
        with open(out, "rb") as f:
            return f.read()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from training.datasets.korean_speech import generate

    audio, _ = generate(1, seed=77, held_out=True)
    return audio[0]


def test_every_format_transcribes_with_segments_in_the_audio(client, speech, asr_store):
    wav = wav_bytes(speech)
    duration = len(speech) / SR
    meta = entry_metadata(asr_store, "asr:latest")
    answers = {}
    for fmt in ("wav", "flac", "mp3", "ogg", "webm", "m4a"):
        data = wav if fmt == "wav" else encode(wav, fmt)
        r = client.post(ROUTE, files={"audio": (f"clip.{fmt}", data)})
        assert r.status_code == 200, (fmt, r.text)
        answers[fmt] = body = r.json()
        assert body["text"] and body["language"] == "ko" and body["model"].startswith("asr:")
        assert body["backend"].startswith("ctranslate2/")
        assert abs(body["duration_s"] - duration) < 0.1, fmt  # codecs pad a few ms
        assert body["segments"] and all(0 <= s["start"] < s["end"] <= duration + 0.5 for s in body["segments"])
        assert body["rtf"] > 0 and body["elapsed_ms"] > 0
    assert answers["wav"]["backend"] == meta["export_ct2"]["backend"]  # served as the export validated it
    assert answers["flac"]["text"] == answers["wav"]["text"]  # lossless: the same samples, the same words


def test_raw_body_and_base64_json_give_the_multipart_answer(client, speech):
    wav = wav_bytes(speech)
    multipart = client.post(ROUTE, files={"audio": ("a.wav", wav)}).json()["text"]
    raw = client.post(ROUTE, content=wav, headers={"content-type": "audio/wav"})
    js = client.post(ROUTE, json={"audio": base64.b64encode(wav).decode()})
    assert raw.status_code == js.status_code == 200
    assert raw.json()["text"] == js.json()["text"] == multipart


def test_word_timestamps_are_ordered_inside_their_segment(client, speech):
    r = client.post(ROUTE, files={"audio": ("a.wav", wav_bytes(speech))}, params={"word_timestamps": "true"})
    assert r.status_code == 200, r.text
    for seg in r.json()["segments"]:
        words = seg["words"]
        assert words and "".join(w["word"] for w in words).strip() == seg["text"]
        starts = [w["start"] for w in words]
        assert starts == sorted(starts) and all(w["start"] <= w["end"] for w in words)
        assert seg["start"] - 0.05 <= words[0]["start"] and words[-1]["end"] <= seg["end"] + 0.05


def test_a_prompt_reaches_the_decoder_and_a_long_one_is_refused(client, speech):
    wav = wav_bytes(speech)
    r = client.post(ROUTE, files={"audio": ("a.wav", wav)}, params={"prompt": "두통, 혈압, 심전도"})
    assert r.status_code == 200 and r.json()["segments"], r.text
    bad = client.post(ROUTE, files={"audio": ("a.wav", wav)}, params={"prompt": "혈압" * 101})
    assert bad.status_code == 422 and "prompt" in bad.json()["error"]

    from tasks import speech as decoding

    seen = {}

    class Model:  # what faster-whisper is asked: the prompt, greedy, window by window
        def transcribe(self, audio, **kwargs):
            seen.update(kwargs)
            return iter([]), None

    decoding.fast_transcribe(Model(), speech, "ko", prompt="두통")
    assert seen["initial_prompt"] == "두통" and seen["beam_size"] == 1 and seen["condition_on_previous_text"] is False


def test_long_audio_goes_window_by_window(client, speech):
    """Speech at 0 s and again at 32 s: the second lies in the second 30-second window."""
    gap = np.zeros(32 * SR - len(speech), np.float32)
    r = client.post(ROUTE, files={"audio": ("long.wav", wav_bytes(np.concatenate([speech, gap, speech])))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration_s"] > 34
    assert any(s["start"] >= 30 for s in body["segments"]), body["segments"]
    # the first window's text starts with its speech (where a barely tuned model ends a segment is its guess)
    assert any(s["start"] < 6 and s["text"] for s in body["segments"]), body["segments"]


def test_silence_gives_an_empty_transcript(client):
    r = client.post(ROUTE, files={"audio": ("quiet.wav", wav_bytes(np.zeros(3 * SR, np.float32)))})
    assert r.status_code == 200
    assert r.json()["text"] == "" and r.json()["segments"] == [] and r.json()["duration_s"] == 3.0


def test_audio_with_no_samples_is_an_empty_transcript(client):
    r = client.post(ROUTE, files={"audio": ("none.wav", wav_bytes(np.zeros(0, np.float32)))})
    assert r.status_code == 200 and r.json()["text"] == "" and r.json()["duration_s"] == 0.0


def too_long() -> bytes:
    return wav_bytes(np.zeros(50 * SR, np.float32))  # 1.6 MB, under the body limit, over max_audio_s=45


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"files": {"audio": ("e.wav", b"")}}, 400, "empty"),
        ({"content": b"", "headers": {"content-type": "audio/wav"}}, 400, "empty"),
        ({"files": {"audio": ("x.wav", b"this is not audio at all")}}, 415, "not a decodable audio file"),
        ({"files": {"audio": ("x.png", png_bytes(np.zeros((32, 32), np.uint8)))}}, 415, "not a decodable"),
        ({"files": {"audio": ("long.wav", too_long())}}, 413, "longer than the limit of 45 s"),
        ({"content": b"x" * (5 * 1024 * 1024), "headers": {"content-type": "audio/wav"}}, 413, "limit"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ({"json": {"audio": "%%% not base64"}}, 400, "base64"),
        ({"json": {"sound": "AAAA"}}, 400, "'audio' field"),
        (
            {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            400,
            "multipart",
        ),
        ({"files": {"audio": ("a.wav", b"RIFF")}, "params": {"word_timestamps": "maybe"}}, 422, "word_timestamps"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, kwargs, status, words):
    r = client.post(ROUTE, **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_truncated_files_are_refused_not_crashed_on(client, speech):
    for fmt in ("m4a", "mp3", "ogg"):
        data = encode(wav_bytes(speech), fmt)
        r = client.post(ROUTE, files={"audio": (f"cut.{fmt}", data[: len(data) // 8])})
        assert r.status_code in (200, 415), (fmt, r.text)  # a cut stream may still hold some decodable audio


def test_readiness_metrics_and_docs(client):
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert {"multipart/form-data", "application/json", "audio/*"} <= set(
        spec["paths"][ROUTE]["post"]["requestBody"]["content"]
    )
    metrics = client.get("/metrics").text
    assert 'task="asr"' in metrics


def test_store_entry_records_zero_shot_fine_tuned_and_export(asr_store):
    meta = entry_metadata(asr_store, "asr:latest")
    test = meta["metrics"]["test"]
    assert test["n"] == 2 and {"cer", "wer"} <= set(test["zero_shot"]) and {"cer", "wer"} <= set(test["fine_tuned"])
    real = test["real_text"]  # the second held-out set: real sentences from documents never trained on
    assert real["n"] == 2 and {"cer", "wer"} <= set(real["zero_shot"]) and {"cer", "wer"} <= set(real["fine_tuned"])
    sources = meta["dataset"]["real_text"]["sources"]
    assert {"konlpy", "debian-faq-ko", "libreoffice-help-ko"} <= set(sources)
    assert meta["dataset"]["real_text"]["train"]["sentences"] == 2  # --real-text 2: mixed into training
    export = meta["export_ct2"]
    assert export["max_abs_diff"] <= export["atol"] == 1.0
    assert {"model.pt", "ct2/model.bin", "ct2/config.json", "ct2/tokenizer.json"} <= set(meta["files"])
