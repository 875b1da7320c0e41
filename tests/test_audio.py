"""Audio decoding (tasks/audio.py) without a server: each container by its first bytes, ffmpeg kept to the upload,
and the values a recording must not have."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tasks.audio import decode_audio, sniff_format
from tasks.images import InputError
from tests.test_hostile import wav

TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)).astype(np.float32)  # 1 s at 22.05 kHz
CONTAINERS = {  # ffmpeg output options -> the demuxer sniff_format must name
    "wav": ([], "wav"),
    "flac": ([], "flac"),
    "mp3": ([], "mp3"),
    "ogg": (["-c:a", "libvorbis"], "ogg"),
    "opus": (["-c:a", "libopus", "-f", "ogg"], "ogg"),
    "webm": (["-c:a", "libopus"], "matroska"),
    "m4a": (["-c:a", "aac"], "mov"),
    "aac": (["-c:a", "aac", "-f", "adts"], "aac"),
    "aiff": ([], "aiff"),
    "caf": ([], "caf"),
    "au": ([], "au"),
}


def encoded(ext: str, options: list[str], tmp_path) -> bytes:
    out = tmp_path / f"tone.{ext}"
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "f32le", "-ar", "22050", "-ac", "1", "-i", "pipe:0", *options]
    subprocess.run([*cmd, str(out)], input=TONE.tobytes(), check=True)
    return out.read_bytes()


@pytest.mark.parametrize("ext", CONTAINERS)
def test_every_container_is_named_by_its_bytes_and_decodes(ext, tmp_path):
    options, demuxer = CONTAINERS[ext]
    data = encoded(ext, options, tmp_path)
    assert sniff_format(data) == sniff_format(bytearray(data)) == demuxer  # multipart uploads are bytearrays
    audio = decode_audio(bytearray(data), 30)
    assert abs(len(audio) / 16000 - 1.0) < 0.1, len(audio)  # codecs pad a few ms
    assert 0.15 < np.sqrt(np.mean(audio[2000:-2000] ** 2)) < 0.25  # the tone, not silence or noise


def test_an_id3_tag_in_front_is_skipped_to_the_stream(tmp_path):
    flac = encoded("flac", [], tmp_path)
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x10" + b"\0" * 16  # a 16-byte ID3v2 tag
    assert sniff_format(tag + flac) == "flac"
    assert sniff_format(tag + b"\xff\xfb\x90\x00") == "mp3"


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"#EXTM3U\n#EXTINF:10,\n/etc/hostname\n#EXT-X-ENDLIST\n", 415, "unknown format"),
        (b"ffconcat version 1.0\nfile '/etc/hostname'\n", 415, "unknown format"),
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", 415, "wav audio stream could not be read"),
        (wav(np.full(8000, np.nan), 16000), 422, "NaN"),
        (wav(np.r_[np.zeros(100), np.inf], 16000), 422, "infinite"),
        (wav(np.zeros(240), 2, float32=False), 422, "2 Hz"),
        (wav(np.zeros(1000), 384_000), 422, "384000 Hz"),
    ],
    ids=["HLS playlist", "concat list", "broken WAV", "NaN", "infinity", "2 Hz", "384 kHz"],
)
def test_refused_audio_says_why_and_nothing_of_ffmpeg(data, status, words):
    with pytest.raises(InputError) as e:
        decode_audio(data, 30)
    assert e.value.status == status and words in str(e.value)
    assert "/proc" not in str(e.value) and "ffmpeg" not in str(e.value)


def test_sample_rates_at_the_edges_are_served():
    for rate in (8000, 192_000):
        audio = decode_audio(wav(np.zeros(rate // 2), rate), 30)
        assert abs(len(audio) - 8000) < 50, (rate, len(audio))
