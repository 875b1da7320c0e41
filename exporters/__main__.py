"""``python -m exporters <task> --format onnx|tensorrt|ct2 [--tag TAG] [--images DIR]``

Adds the exported file to the store entry after a parity check against PyTorch; a failed check removes the
file and exits non-zero. Image tasks export to ONNX (and TensorRT from it); speech to CTranslate2 (``ct2``,
served by faster-whisper), checked by the CER of both on held-out clips.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from tasks import TASKS, get_task

FORMATS = ("onnx", "tensorrt", "ct2")


def export(task: str, fmt: str, tag: str | None = None, images: str | None = None, n: int = 32) -> dict:
    """Export ``tag`` (default ``<task>:latest``) to ``fmt``; returns the parity report recorded in the entry."""
    from exporters import onnx as onnx_export
    from exporters.validate import model_inputs, validation_images
    from tasks.classifier import from_checkpoint
    from tasks.store import get_entry, record, sha256_file, verified_file

    spec = get_task(task)
    entry = get_entry(tag or f"{task}:latest")
    meta = entry.info.metadata
    if (spec.kind == "speech") != (fmt == "ct2"):
        raise ValueError(f"{task} exports to {spec.export_format}, not {fmt}")
    if spec.kind == "speech":
        from exporters.whisper import export_speech

        return export_speech(spec, entry, n)
    if spec.kind == "detection":
        return export_detector(spec, entry, fmt, n)
    if spec.kind == "token-tagging":
        return export_tagger(spec, entry, fmt, n)
    if spec.kind == "palette":
        return export_palette(spec, entry, fmt, n)
    model = from_checkpoint(verified_file(entry, "model.pt"))
    x = model_inputs(spec, meta, validation_images(spec, images, n, seed=meta["config"]["test_seed"] + 1))
    onnx_path = Path(entry.path) / "model.onnx"

    if fmt == "onnx":
        onnx_export.export_onnx(model, spec, meta, str(entry.tag), onnx_path)
        try:
            report = onnx_export.validate_onnx(model, onnx_path, x, spec.export_atol)
        except Exception:
            onnx_path.unlink(missing_ok=True)
            raise
        report.update(file="model.onnx", opset=onnx_export.OPSET)
        record(entry, "export_onnx", report, files={"model.onnx": sha256_file(onnx_path)})
        return report

    if fmt == "tensorrt":
        from exporters import tensorrt

        tensorrt.require_tensorrt()  # fail before any work when TensorRT or the GPU is missing
        if "model.onnx" not in meta.get("files", {}):
            export(task, "onnx", str(entry.tag), images, n)
            entry = get_entry(str(entry.tag))
        engine = Path(entry.path) / "model.plan"
        tensorrt.build_engine(verified_file(entry, "model.onnx"), engine, meta["input_size"])
        try:
            report = tensorrt.validate_engine(model, engine, x, spec.export_atol_fp16)
        except Exception:
            engine.unlink(missing_ok=True)
            raise
        report.update(file="model.plan", precision="fp16")
        record(entry, "export_tensorrt", report, files={"model.plan": sha256_file(engine)})
        return report
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def export_detector(spec, entry, fmt: str, n: int) -> dict:
    """YOLO detectors: ONNX through ultralytics; TensorRT from that ONNX. Both validated against PyTorch with
    our own letterbox and NMS on held-out synthetic and real healthy slices."""
    from exporters import yolo
    from tasks.store import record, sha256_file, verified_file
    from training.detector import offline_ultralytics

    if fmt == "tensorrt":
        from exporters import tensorrt

        tensorrt.require_tensorrt()  # fail before any work when TensorRT or the GPU is missing
    meta = entry.info.metadata
    weights = verified_file(entry, "model.pt")
    with tempfile.TemporaryDirectory() as tmp:
        offline_ultralytics(Path(tmp))
        slices = yolo.validation_slices(spec, n, meta["config"]["test_seed"] + 1)
        if fmt == "onnx":
            out = Path(entry.path) / "model.onnx"
            yolo.export_onnx(weights, spec, meta, str(entry.tag), out)
            run, atol, extra = yolo.onnx_runner(out), spec.export_atol, {"opset": yolo.OPSET}
        else:
            if "model.onnx" not in meta.get("files", {}):
                export_detector(spec, entry, "onnx", n)
            out = Path(entry.path) / "model.plan"
            tensorrt.build_engine(verified_file(entry, "model.onnx"), out, meta["input_size"])
            run, atol, extra = tensorrt.TensorRTRunner(out), spec.export_atol_fp16, {"precision": "fp16"}
        try:
            report = yolo.validate(weights, run, spec, meta, slices, atol)
        except Exception:
            out.unlink(missing_ok=True)
            raise
    report.update(file=out.name, **extra)
    record(entry, f"export_{fmt}", report, files={out.name: sha256_file(out)})
    return report


def export_tagger(spec, entry, fmt: str, n: int) -> dict:
    """Token taggers: ONNX with softmax in the graph, checked on the windows of ``n`` held-out documents."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from exporters import tagger
    from tasks.spec import resolve
    from tasks.store import record, sha256_file

    if fmt != "onnx":
        raise ValueError(f"{spec.name} exports to onnx only")
    model = AutoModelForTokenClassification.from_pretrained(str(entry.path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(entry.path))
    docs = resolve(spec.synthetic)(n, seed=entry.info.metadata["config"]["test_seed"] + 1, held_out=True)
    out = Path(entry.path) / "model.onnx"
    tagger.export_onnx(model, spec, str(entry.tag), out)
    try:
        report = tagger.validate(model, out, tokenizer, [d.text for d in docs], spec, spec.export_atol)
    except Exception:
        out.unlink(missing_ok=True)
        raise
    report.update(file="model.onnx", opset=tagger.OPSET, n_docs=len(docs))
    record(entry, "export_onnx", report, files={"model.onnx": sha256_file(out)})
    return report


def export_palette(spec, entry, fmt: str, n: int) -> dict:
    """The palette generator: ONNX, checked on the held-out photos (whole and in quadrants) and ``n`` held-out
    synthetic images."""
    from PIL import Image

    from exporters import palette as palette_export
    from exporters.onnx import OPSET
    from tasks import palette
    from tasks.spec import resolve
    from tasks.store import record, sha256_file, verified_file
    from training.datasets.swatches import held_out_photos
    from training.palette import from_checkpoint

    if fmt != "onnx":
        raise ValueError(f"{spec.name} exports to onnx only")
    model = from_checkpoint(verified_file(entry, "model.pt"))
    synthetic, _ = resolve(spec.synthetic)(n, seed=entry.info.metadata["config"]["test_seed"] + 1)
    images = [im for _, im in held_out_photos()] + [Image.fromarray(a) for a in synthetic]
    x = np.stack([palette.generator_input(palette.thumbnail(im, spec.thumbnail), spec) for im in images])
    out = Path(entry.path) / "model.onnx"
    palette_export.export_onnx(model, spec, str(entry.tag), out)
    try:
        report = palette_export.validate(model, out, x, spec.export_atol)
    except Exception:
        out.unlink(missing_ok=True)
        raise
    report.update(file="model.onnx", opset=OPSET)
    record(entry, "export_onnx", report, files={"model.onnx": sha256_file(out)})
    return report


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
