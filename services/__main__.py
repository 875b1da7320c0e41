"""``python -m services [--host H] [--port P] [--separate] [--no-build] [TASK ...]``: serve the suite until Ctrl-C.

By default one address for everything: ``bentoml serve services.gateway:Gateway`` on P, the web page at ``/``,
every task under ``/v1/<task>/`` (each task in its own worker processes). With ``--separate``, one BentoML server
per task on consecutive ports instead (in the order given, default the registry's), each ``bentoml serve`` of the
task's service (``services.target``): the shape of separate deployments.

The servers start at once, whether the store has the tasks' models or not: the missing demo models are built in
the background (``python -m training.demo``, fastest first, at a lower CPU priority than the servers; its log and
status file in ``.build/``), and each task turns ready as its model lands (services/versions.py). ``--no-build``
leaves the store as it is.
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
BUILD_DIR = ROOT / ".build"  # the background build's log and status file
HOMES: list[Path] = []  # the servers' own BENTOML_HOMEs, removed at exit


def serve(target: str, host: str, port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port), *args]
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, env=env)


def own_home(home: Path) -> dict[str, str]:
    """An environment with a BENTOML_HOME of its own over the same models: each `bentoml serve` empties its home's
    metrics folder at start, so servers side by side must not share one."""
    own = Path(tempfile.mkdtemp(prefix="bentoml-home-"))
    HOMES.append(own)
    (home / "models").mkdir(parents=True, exist_ok=True)  # a fresh machine: the link must not dangle
    (own / "models").symlink_to(home / "models")
    return {**os.environ, "BENTOML_HOME": str(own)}


def build_missing(tasks: list[str], status: Path, train_args: list[str]) -> subprocess.Popen:
    """``python -m training.demo`` for ``tasks`` in the background (it skips those the store has), niced below the
    servers, its output in ``.build/build.log``."""
    cmd = [sys.executable, "-m", "training.demo", "--status", str(status), *tasks]
    for item in train_args:
        cmd += ["--train-args", item]
    log = status.parent / "build.log"
    print(f"building missing demo models in the background (fastest first); log: {log}", flush=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lambda: os.nice(10)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"default: all ({', '.join(TASKS)})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--separate", action="store_true", help="one server per task on consecutive ports")
    parser.add_argument("--no-build", action="store_true", help="do not build missing demo models in the background")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="the build's log and status file")
    parser.add_argument(
        "--train-args",
        action="append",
        default=[],
        metavar="TASK=ARGS",
        help="passed to the background build (`python -m training.demo --train-args`): smaller demo models",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    tasks = args.tasks or list(TASKS)
    status = args.build_dir.resolve() / "status.json"
    extra = () if args.no_build else ("--arg", f"build_status={status}")
    if not args.no_build:
        status.parent.mkdir(parents=True, exist_ok=True)
        status.unlink(missing_ok=True)  # a status left by an earlier run would describe builds not running
    if args.separate:
        home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
        procs = []
        for i, task in enumerate(tasks):
            procs.append(serve(target(task), args.host, args.port + i, *extra, env=own_home(home)))
            print(f"{task}: http://{args.host}:{args.port + i}  (API docs at /)", flush=True)
    else:
        procs = [serve("services.gateway:Gateway", args.host, args.port, "--arg", "tasks=" + ",".join(tasks), *extra)]
        url = f"http://{args.host}:{args.port}"
        print(f"the suite: {url}/  (API docs: {url}/docs; tasks: {', '.join(tasks)})", flush=True)
    builder = None if args.no_build else build_missing(tasks, status, args.train_args)

    def stop(*_: object) -> None:
        for p in procs + ([builder] if builder else []):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    try:
        watched = builder
        while all(p.poll() is None for p in procs):
            if watched is not None and watched.poll() is not None:
                if watched.returncode not in (0, 1):  # 1: some builds failed, each recorded with its reason
                    from training.demo import abandon

                    abandon(
                        status, f"the build process exited with {watched.returncode} (see {status.parent}/build.log)"
                    )
                watched = None
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for p in procs + ([builder] if builder else []):
            p.wait(30)
        for home in HOMES:
            shutil.rmtree(home, ignore_errors=True)
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
