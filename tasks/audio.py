"""Audio decoding for speech tasks: any container ffmpeg reads (wav, flac, mp3, ogg, webm, m4a, ...) -> 16 kHz mono
float32, with a length limit. Bytes go to ffmpeg through an in-memory file (Linux ``memfd``), never to disk,
and formats whose index sits at the end (m4a / mp4) can still be read, which a pipe does not allow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from tasks.images import InputError

SAMPLE_RATE = 16_000


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RuntimeError("ffmpeg is not installed: `apt-get install ffmpeg` (make setup installs it)")
    return path


# The containers the service reads, by their first bytes, each with the ffmpeg demuxer forced for it: ffmpeg
# never guesses the format, so no playlist (HLS), concat list or other file that names further files is opened.
FORMATS = "WAV, FLAC, MP3, AAC, Ogg (Vorbis, Opus), WebM / Matroska, M4A / MP4, AIFF, CAF, AMR or AU"
MIN_RATE, MAX_RATE = 8_000, 192_000


def sniff_format(data: bytes | bytearray) -> str | None:
    """The ffmpeg demuxer for an audio file's first bytes, or None for anything else."""
    head = bytes(data[:12])
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "mov"  # m4a, mp4, 3gp (external data references stay off: -enable_drefs 0)
    simple = {b"fLaC": "flac", b"OggS": "ogg", b"\x1aE\xdf\xa3": "matroska", b"caff": "caf", b".snd": "au"}
    if head[:4] in simple:
        return simple[head[:4]]
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:3] == b"ID3" and len(data) >= 10:  # an ID3v2 tag (its size in 7-bit bytes), then the stream
        size = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        after = sniff_format(data[size : size + 12]) if size + 4 <= len(data) else None
        return after if after in ("flac", "aac") else "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame's sync word
        return "aac" if head[1] & 0x06 == 0 else "mp3"  # layer bits 00: ADTS (AAC)
    return None


def decode_audio(
    data: bytes | bytearray, max_seconds: float, sample_rate: int = SAMPLE_RATE, timeout: float = 120.0
) -> np.ndarray:
    """Bytes of an audio file -> (samples,) float32 in [-1, 1] at ``sample_rate``, mono.

    ffmpeg reads only the uploaded bytes: the demuxer is chosen here from the file's first bytes (one of
    :data:`FORMATS`), only the ``file`` protocol is allowed (for the in-memory file itself), and its messages are
    never returned. Raises :class:`InputError`: 400 for an empty body, 415 for bytes that are not audio of those
    formats, 413 for audio longer than ``max_seconds`` (decoding stops just past it, so an hour-long upload costs
    no more than ``max_seconds`` of decoding), 422 for a sample rate outside 8-192 kHz or samples that are NaN or
    infinite.
    """
    if not data:
        raise InputError("empty audio: the request carried no bytes", 400)
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError(f"not a decodable audio file: an unknown format (send {FORMATS})", 415)
    stop_at = max_seconds + 1.0
    cmd = [ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"]
    cmd += ["-protocol_whitelist", "file", "-f", fmt] + (["-enable_drefs", "0"] if fmt == "mov" else [])
    cmd += ["-i", "{input}", "-map", "0:a:0", "-t", f"{stop_at:.3f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sample_rate), "-"]
    with _in_memory_file(data) as (path, fds):
        cmd[cmd.index("{input}")] = path
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, pass_fds=fds)
        except subprocess.TimeoutExpired as e:
            raise InputError(f"audio took longer than {timeout:.0f} s to decode", 422) from e
    rate = _input_rate(proc.stderr)
    if proc.returncode != 0 or rate is None:
        raise InputError(f"not a decodable audio file: its {fmt} audio stream could not be read", 415)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"audio sampled at {rate} Hz: the service takes {MIN_RATE}-{MAX_RATE} Hz", 422)
    audio = np.frombuffer(proc.stdout, np.float32)
    if len(audio) > max_seconds * sample_rate:
        raise InputError(f"audio longer than the limit of {max_seconds:g} s; split it or raise max_audio_s", 413)
    if not np.isfinite(audio).all():
        raise InputError("the audio holds NaN or infinite samples", 422)
    return np.clip(audio, -1.0, 1.0)


def _input_rate(stderr: bytes) -> int | None:
    """The sample rate of the input's first audio stream, from ffmpeg's description of its input."""
    text = stderr.decode("utf-8", "replace")
    inputs = text.split("Output #0", 1)[0]
    match = re.search(r"Stream #0:\d+.*?: Audio: [^\n]*?(\d+) Hz", inputs)
    return int(match.group(1)) if match else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _in_memory_file:
    """A readable, seekable path holding ``data``: a memfd on Linux, a private temporary file elsewhere."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fd = -1
        self.tmp: str | None = None

    def __enter__(self) -> tuple[str, tuple[int, ...]]:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("upload", 0)
            _write_all(self.fd, self.data)
            os.lseek(self.fd, 0, os.SEEK_SET)
            return f"/proc/self/fd/{self.fd}", (self.fd,)
        fd, self.tmp = tempfile.mkstemp(prefix="upload-")
        _write_all(fd, self.data)
        os.close(fd)
        return self.tmp, ()

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        if self.tmp:
            os.unlink(self.tmp)
