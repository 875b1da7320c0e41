"""``python -m exporters <task> --format onnx|tensorrt|ct2 [--tag TAG] [--images DIR]``

Adds the exported file to the store entry after a parity check against PyTorch; a failed check removes the
file and exits non-zero. Image tasks export to ONNX (and TensorRT from it); speech to CTranslate2 (``ct2``,
served by faster-whisper), checked by the CER of both on held-out clips.
"""

from __future__ import annotations

import argparse
import sys

from tasks import TASKS, get_task
from tasks.kinds import export_formats, kind_of
from tasks.spec import resolve

FORMATS = export_formats()  # ("onnx", "tensorrt", "ct2"): each kind says which of them it exports to


def export(task: str, fmt: str, tag: str | None = None, images: str | None = None, n: int = 32) -> dict:
    """Export ``tag`` (default ``<task>:latest``) to ``fmt``; returns the parity report recorded in the entry."""
    from tasks.store import get_entry

    spec = get_task(task)
    kind = kind_of(spec)
    entry = get_entry(tag or f"{task}:latest")
    if fmt not in kind.exporters:
        raise ValueError(f"{task} exports to {' or '.join(kind.exporters)}, not {fmt}")
    return resolve(kind.exporters[fmt])(spec, entry, n, images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--tag", help="store entry (default: <task>:latest)")
    parser.add_argument("--images", help="folder of real images to validate on (default: held-out synthetic)")
    parser.add_argument("-n", type=int, default=32, help="number of validation images (speech: clips)")
    args = parser.parse_args(argv)

    from exporters.tensorrt import TensorRTUnavailable
    from exporters.validate import ParityError

    try:
        report = export(args.task, args.format, args.tag, args.images, args.n)
    except TensorRTUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ParityError, FileNotFoundError, ValueError) as e:
        print(f"error: {args.format} export failed: {e}", file=sys.stderr)
        return 1
    name = args.tag or args.task + ":latest"
    if args.format == "ct2":
        print(
            f"ct2 export of {name} passed parity: CER {report['cer_fast']:.4f} ({report['backend']}, "
            f"{'short contexts' if report['short_context'] else '30-second windows'}) vs "
            f"{report['cer_pytorch']:.4f} (PyTorch), {report['max_abs_diff']:.2f} <= {report['atol']:g} points "
            f"over {report['n_clips']} held-out clips, {report['identical_transcripts']} transcripts identical"
        )
        return 0
    print(
        f"{args.format} export of {name} passed parity: "
        f"max difference {report['max_abs_diff']:.2e} <= {report['atol']:g} over "
        + (f"{report['n_docs']} documents" if "n_docs" in report else f"{report['n_images']} images")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
