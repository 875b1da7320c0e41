"""Class-per-folder image trees, such as the NIH malaria layout ``cell_images/{Parasitized,Uninfected}/*.png``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def find_class_root(root: Path, labels: Sequence[str]) -> Path:
    """The folder holding one sub-folder per label: ``root`` itself or ``root/cell_images`` (NIH zip)."""
    for candidate in (root, root / "cell_images"):
        if all((candidate / label).is_dir() for label in labels):
            return candidate
    raise FileNotFoundError(
        f"{root} does not hold one folder per class: expected {', '.join(labels)} under {root} "
        f"or {root / 'cell_images'}"
    )


def list_images(root: str | Path, labels: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Image files and label indices, sorted for reproducibility. Non-image files (NIH ships Thumbs.db) are
    skipped; a class folder with no image is an error."""
    base = find_class_root(Path(root), labels)
    paths: list[Path] = []
    targets: list[int] = []
    for index, label in enumerate(labels):
        found = sorted(p for p in (base / label).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"no images in {base / label}")
        paths += found
        targets += [index] * len(found)
    return paths, targets


def fingerprint(paths: Sequence[Path], targets: Sequence[int]) -> str:
    """SHA-256 over (relative name, size, label) of every file: changes when the dataset changes."""
    h = hashlib.sha256()
    for p, t in zip(paths, targets, strict=True):
        h.update(f"{p.parent.name}/{p.name}:{p.stat().st_size}:{t}\n".encode())
    return h.hexdigest()
