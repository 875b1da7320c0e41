"""``python -m services [--host H] [--port P] [TASK ...]``: serve every task, one BentoML server per task on
consecutive ports (malaria on P, tumor on P+1, asr on P+2, keyphrase on P+3, palette on P+4), until Ctrl-C.
Each server is ``bentoml serve services.<task>:<Task>``; the single-entry gateway replaces this when it lands."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all ({', '.join(TASKS)})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    procs = []
    for i, task in enumerate(args.tasks or list(TASKS)):
        port = args.port + i
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            f"services.{task}:{task.capitalize()}",
            "--host",
            args.host,
            "--port",
            str(port),
        ]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, start_new_session=True))
        print(f"{task}: http://{args.host}:{port}  (docs: http://{args.host}:{port}/docs)", flush=True)

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
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
