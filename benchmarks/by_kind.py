"""The benchmark runs :mod:`tasks.kinds` names (``benchmark_run``) and the request bodies it samples that no
benchmark module already makes. A run returns the rows of one report and its notes."""

from __future__ import annotations

import importlib


def run(kind, spec, entry, args, concurrencies: list[int], requests: int, model_arg: dict) -> tuple[list, list]:
    """The floor (``kind.benchmark``'s ``floor_rows``: the model alone, in process, from the same bodies) and the
    service over HTTP (every concurrency), for kinds whose requests are single bodies."""
    from benchmarks.harness import service_rows

    bench = importlib.import_module(kind.benchmark)
    sample = kind.sample
    if sample.field not in (None, "image"):
        raise ValueError(f"{kind.name}: the service rows send multipart bodies as field 'image' only")
    payloads = sample.make(spec)
    content_type = None if sample.field else sample.content_type  # None: multipart "image" uploads
    rows = bench.floor_rows(spec, entry, payloads, args.device, args.seconds)
    rows += service_rows(
        spec.name, sample.route, payloads, args.device, concurrencies, requests, model_arg, content_type
    )
    return rows, list(bench.summary(rows, concurrencies))


def run_speech(kind, spec, entry, args, concurrencies: list[int], requests: int, model_arg: dict) -> tuple[list, list]:
    """Speech: held-out clips through openai-whisper, faster-whisper and the vosk peer in process, then the service
    (one request at a time, then concurrently); rows carry the CER of each path."""
    bench = importlib.import_module(kind.benchmark)
    clips, refs = bench.sample_clips(spec, args.clips)
    rows = bench.floor_rows(spec, entry, clips, refs, args.device)
    rows += bench.service_rows(spec, clips, refs, args.device, concurrencies, requests, model_arg)
    return rows, [*bench.summary(rows, args.device), bench.entry_scores(entry)]


def speech_wavs(spec, n: int = 4) -> list[bytes]:
    """``n`` held-out clips as WAV files (16-bit mono at the task's sample rate), as a client uploads them."""
    from benchmarks.speech import sample_clips, wav_bytes

    clips, _ = sample_clips(spec, n)
    return [wav_bytes(c, spec.sample_rate) for c in clips]
