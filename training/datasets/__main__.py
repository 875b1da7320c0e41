"""``python -m training.datasets <task> --out DIR [-n N] [--seed S]``: write synthetic images to disk as a
class-per-folder tree (``DIR/<label>/<i>.png``), the layout ``python -m training <task> --data DIR`` reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks import TASKS, get_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.datasets", description=__doc__)
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from tasks.images import encode_png
    from tasks.spec import resolve

    spec = get_task(args.task)
    images, labels = resolve(spec.synthetic)(args.n, seed=args.seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = args.out / spec.labels[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(encode_png(image))
    print(f"wrote {len(images)} images under {args.out}/{{{','.join(spec.labels)}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
