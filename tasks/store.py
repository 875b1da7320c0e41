"""The BentoML model store as every stage sees it: find an entry, check a file's SHA-256, record metadata.

Entries are ``<task>:<version>``; each file an entry holds has its SHA-256 in ``metadata["files"]``, checked when
the file is loaded, so a file corrupted on disk is refused with one clear message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean(value: Any) -> Any:
    """Make a value acceptable to BentoML metadata: plain types, unset (None) keys dropped, NaN as "nan"."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def get_entry(tag: str):
    """The store entry for ``tag`` (``name``, ``name:latest`` or ``name:version``), with a clear error."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound as e:
        raise FileNotFoundError(
            f"no model {tag!r} in the BentoML store: train one with `python -m training.demo {tag.split(':')[0]}` "
            f"(or `make models`); `bentoml models list` shows the store"
        ) from e


def verified_file(entry, name: str) -> Path:
    """Path of ``name`` in ``entry`` after checking it against the SHA-256 recorded at write time."""
    path = Path(entry.path) / name
    expected = entry.info.metadata.get("files", {}).get(name)
    if expected is None:
        raise FileNotFoundError(f"{entry.tag} has no {name} (files: {sorted(entry.info.metadata.get('files', {}))})")
    if not path.is_file():
        raise FileNotFoundError(f"{entry.tag}: {path} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"{entry.tag}: {name} is corrupt (sha256 {actual[:12]}..., expected {expected[:12]}...)")
    return path


def record(entry, key: str, value: Any, files: dict[str, str] | None = None) -> None:
    """Add ``metadata[key] = value`` (and file checksums) to an existing entry and save its model.yaml."""
    entry.info.metadata[key] = clean(value)
    if files:
        entry.info.metadata.setdefault("files", {}).update(files)
    entry.flush()


def entry_for_task(task: str, tag: str):
    """``get_entry(tag)``, refusing an entry that was trained for another task."""
    entry = get_entry(tag)
    found = entry.info.metadata.get("task")
    if found != task:
        raise ValueError(f"{entry.tag} is a {found!r} model, not {task!r}")
    return entry
