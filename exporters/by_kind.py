"""The export functions :mod:`tasks.kinds` names, one per kind and format, all of one signature:
``export(spec, entry, n, images) -> report``. Each writes its file into the store entry, proves it against
PyTorch on held-out inputs (``n`` of them; ``images``: a folder of real ones, where the kind takes images) and
records the report and the file's SHA-256 in the entry; a failed check removes the file and raises."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def _classifier(spec, entry, n: int, images: str | None):
    """The checkpoint's model and the validation batch ``(n, 3, S, S)`` float32 it is compared on."""
    from exporters.validate import model_inputs, validation_images
    from tasks.classifier import from_checkpoint
    from tasks.store import verified_file

    meta = entry.info.metadata
    model = from_checkpoint(verified_file(entry, "model.pt"))
    x = model_inputs(spec, meta, validation_images(spec, images, n, seed=meta["config"]["test_seed"] + 1))
    return model, x


def classifier_onnx(spec, entry, n: int, images: str | None) -> dict:
    """Image classifiers: ONNX with softmax in the graph and the task's metadata, checked on probabilities."""
    from exporters import onnx as onnx_export
    from tasks.store import record, sha256_file

    model, x = _classifier(spec, entry, n, images)
    onnx_path = Path(entry.path) / "model.onnx"
    onnx_export.export_onnx(model, spec, entry.info.metadata, str(entry.tag), onnx_path)
    try:
        report = onnx_export.validate_onnx(model, onnx_path, x, spec.export_atol)
    except Exception:
        onnx_path.unlink(missing_ok=True)
        raise
    report.update(file="model.onnx", opset=onnx_export.OPSET)
    record(entry, "export_onnx", report, files={"model.onnx": sha256_file(onnx_path)})
    return report


def classifier_tensorrt(spec, entry, n: int, images: str | None) -> dict:
    """Image classifiers: a TensorRT fp16 engine from the ONNX file (exported first when missing)."""
    from exporters import tensorrt
    from tasks.store import get_entry, record, sha256_file, verified_file

    tensorrt.require_tensorrt()  # fail before any work when TensorRT or the GPU is missing
    if "model.onnx" not in entry.info.metadata.get("files", {}):
        classifier_onnx(spec, entry, n, images)
        entry = get_entry(str(entry.tag))
    model, x = _classifier(spec, entry, n, images)
    engine = Path(entry.path) / "model.plan"
    tensorrt.build_engine(verified_file(entry, "model.onnx"), engine, entry.info.metadata["input_size"])
    try:
        report = tensorrt.validate_engine(model, engine, x, spec.export_atol_fp16)
    except Exception:
        engine.unlink(missing_ok=True)
        raise
    report.update(file="model.plan", precision="fp16")
    record(entry, "export_tensorrt", report, files={"model.plan": sha256_file(engine)})
    return report


def _detector(spec, entry, fmt: str, n: int) -> dict:
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
                _detector(spec, entry, "onnx", n)
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


def detector_onnx(spec, entry, n: int, images: str | None) -> dict:
    """Detectors to ONNX (``images`` is unused: held-out slices are synthetic and real healthy MRI)."""
    return _detector(spec, entry, "onnx", n)


def detector_tensorrt(spec, entry, n: int, images: str | None) -> dict:
    """Detectors to a TensorRT fp16 engine, from the ONNX file (exported first when missing)."""
    return _detector(spec, entry, "tensorrt", n)


def speech_ct2(spec, entry, n: int, images: str | None) -> dict:
    """Whisper to CTranslate2, checked by the CER of both on ``n`` held-out clips (:mod:`exporters.whisper`)."""
    from exporters.whisper import export_speech

    return export_speech(spec, entry, n)


def tagger_onnx(spec, entry, n: int, images: str | None) -> dict:
    """Token taggers: ONNX with softmax in the graph, checked on the windows of ``n`` held-out documents."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from exporters import tagger
    from tasks.spec import resolve
    from tasks.store import record, sha256_file

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


def qa_onnx(spec, entry, n: int, images: str | None) -> dict:
    """Span models: ONNX start / end logits, checked on the windows of the questions of ``n`` held-out passages
    (some longer than one window) and on the decoded answers."""
    from exporters import qa as qa_export
    from tasks.spec import resolve
    from tasks.store import record, sha256_file
    from training.qa import load_model

    tokenizer, model = load_model(str(entry.path))
    passages = resolve(spec.synthetic)(n, seed=entry.info.metadata["config"]["test_seed"] + 2, held_out=True)
    questions = [(q.question, p.context) for p in passages for q in p.questions]
    long = " ".join(p.context for p in passages)  # one context past a window: the decoding across windows
    questions += [(q.question, long) for q in passages[0].questions]
    out = Path(entry.path) / "model.onnx"
    qa_export.export_onnx(model, spec, str(entry.tag), out)
    try:
        report = qa_export.validate(model, out, tokenizer, questions, spec, spec.export_atol)
    except Exception:
        out.unlink(missing_ok=True)
        raise
    report.update(file="model.onnx", opset=qa_export.OPSET, n_passages=len(passages))
    record(entry, "export_onnx", report, files={"model.onnx": sha256_file(out)})
    return report


def palette_onnx(spec, entry, n: int, images: str | None) -> dict:
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

    model = from_checkpoint(verified_file(entry, "model.pt"))
    synthetic, _ = resolve(spec.synthetic)(n, seed=entry.info.metadata["config"]["test_seed"] + 1)
    pictures = [im for _, im in held_out_photos()] + [Image.fromarray(a) for a in synthetic]
    x = np.stack([palette.generator_input(palette.thumbnail(im, spec.thumbnail), spec) for im in pictures])
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
