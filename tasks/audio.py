"""Audio decoding for speech tasks: any container ffmpeg reads (wav, flac, mp3, ogg, webm, m4a, ...) -> 16 kHz mono
float32, with a length limit. Bytes go to ffmpeg through an in-memory file (Linux ``memfd``), never to disk,
and formats whose index sits at the end (m4a / mp4) can still be read, which a pipe does not allow.
"""

from __future__ import annotations

import os
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


def decode_audio(data: bytes, max_seconds: float, sample_rate: int = SAMPLE_RATE, timeout: float = 120.0) -> np.ndarray:
    """Bytes of an audio file -> (samples,) float32 in [-1, 1] at ``sample_rate``, mono.

    Raises :class:`InputError`: 400 for an empty body, 415 for bytes ffmpeg cannot decode as audio, 413 for audio
    longer than ``max_seconds``. Decoding stops just past the limit, so an hour-long upload costs no more than
    ``max_seconds`` of decoding.
    """
    if not data:
        raise InputError("empty audio: the request carried no bytes", 400)
    stop_at = max_seconds + 1.0
    cmd = [ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "{input}", "-vn"]
    cmd += ["-t", f"{stop_at:.3f}", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sample_rate), "-"]
    with _in_memory_file(data) as (path, fds):
        cmd[cmd.index("{input}")] = path
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, pass_fds=fds)
        except subprocess.TimeoutExpired as e:
            raise InputError(f"audio took longer than {timeout:.0f} s to decode", 422) from e
    if proc.returncode != 0:
        raise InputError(f"not a decodable audio file ({_first_line(proc.stderr)})", 415)
    audio = np.frombuffer(proc.stdout, np.float32)
    if len(audio) > max_seconds * sample_rate:
        raise InputError(f"audio longer than the limit of {max_seconds:g} s; split it or raise max_audio_s", 413)
    return np.clip(audio, -1.0, 1.0)


def _first_line(stderr: bytes) -> str:
    """ffmpeg's first error line without the input's name (which is only our memfd path)."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            return line.split(": ", 1)[-1][:200] if line.startswith(("/proc", "/dev", "/tmp")) else line[:200]
    return "ffmpeg gave no reason"


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
