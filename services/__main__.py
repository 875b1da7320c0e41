"""``python -m services [--host H] [--port P] [--separate] [TASK ...]``: serve the suite until Ctrl-C.

By default one address for everything: ``bentoml serve services.gateway:Gateway`` on P, the web page at ``/``,
every task under ``/v1/<task>/`` (each task in its own worker processes). With ``--separate``, one BentoML server
per task on consecutive ports instead (malaria on P, tumor on P+1, asr on P+2, keyphrase on P+3, palette on P+4),
each ``bentoml serve services.<task>:<Task>``: the shape of separate deployments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services import target
from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
HOMES: list[Path] = []  # the servers' own BENTOML_HOMEs, removed at exit


def serve(target: str, host: str, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port), *args]
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, env=env)


def own_home(home: Path) -> dict[str, str]:
    """An environment with a BENTOML_HOME of its own over the same models: each `bentoml serve` empties its home's
    metrics folder at start, so servers side by side must not share one."""
    own = Path(tempfile.mkdtemp(prefix="bentoml-home-"))
    HOMES.append(own)
    (own / "models").symlink_to(home / "models")
    return {**os.environ, "BENTOML_HOME": str(own)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all ({', '.join(TASKS)})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--separate", action="store_true", help="one server per task on consecutive ports")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    tasks = args.tasks or list(TASKS)
    if args.separate:
        home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
        procs = []
        for i, task in enumerate(tasks):
            procs.append(serve(target(task), args.host, args.port + i, env=own_home(home)))
            print(f"{task}: http://{args.host}:{args.port + i}  (API docs at /)", flush=True)
    else:
        procs = [serve("services.gateway:Gateway", args.host, args.port, "--arg", "tasks=" + ",".join(tasks))]
        url = f"http://{args.host}:{args.port}"
        print(f"the suite: {url}/  (API docs: {url}/docs; tasks: {', '.join(tasks)})", flush=True)

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for p in procs:
            p.wait(30)
        for home in HOMES:
            shutil.rmtree(home, ignore_errors=True)
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
