"""Start and stop ``bentoml serve`` for a task on a free loopback port (benchmarks and tests share this)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_target(task: str) -> str:
    """``services.<module>:<Task>``; the gateway is ``services.gateway:Gateway``."""
    from services import target

    return "services.gateway:Gateway" if task == "gateway" else target(task)


def start_server(
    task: str,
    args: dict[str, object],
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    timeout: float = 180,
    wait_for: str = "/readyz",
) -> tuple[subprocess.Popen, str, Path]:
    """Run the task's service until ``wait_for`` answers 200 (``/livez``: up, whether ready or not); returns
    (process, base URL, log file)."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        service_target(task),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for k, v in args.items():
        cmd += ["--arg", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    log_dir = log_dir or Path(env.get("BENTOML_HOME", Path.home() / "bentoml"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"serve-{task}-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + wait_for, timeout=2) as r:
                if r.status == 200:
                    return proc, url, log_path
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise TimeoutError(f"{task} service: {wait_for} not 200 within {timeout}s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
