"""Live model loading: which store entry a task service serves, and switching it while requests run.

A service follows ``<task>:latest`` (the default) or is pinned to one tag (``--arg model_tag=<task>:<version>``,
or ``POST /v1/<task>/models``). A watcher thread looks at the store every ``poll_s`` seconds (Triton's
model-repository polling): an entry newer than the one served, or the served entry with new files (its export
landed), is loaded and warmed up beside the one serving, then swapped in; the old one is released when its last
request has left. A service whose store has no entry yet starts anyway and answers 503 "no model yet" with
``Retry-After`` until one lands; one that fails to load a new entry (a corrupt file, a missing export) keeps
serving the old one and shows the reason (log, ``GET /v1/<task>/models``, metrics).

A loaded version is a *replica*: a shallow copy of the service holding that version's model, worker pool and
batcher, so every request runs start to end on the version it started on (its answer names that version).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger("bentoml.suite")

NO_MODEL = "none"  # the tag an answer carries when no trained model took part (palette's clustering)


class Incomplete(FileNotFoundError):
    """An entry that lacks a file its service needs (its export has not landed yet): tried again when it changes."""


class NotInStore(LookupError):
    """No store entry has the tag asked for (a version must be named in full)."""


class Busy(RuntimeError):
    """Another load is running (one at a time)."""


@dataclass(eq=False)
class Version:
    """One loaded version: the replica serving it, and the requests it is still answering."""

    replica: Any  # a TaskService with this version's model, pool and batcher
    tag: str
    stamp: int  # its model.yaml's mtime (ns) when loaded (a changed file means new files: loaded again)
    inflight: int = 0
    retired: bool = False

    def close(self) -> None:
        """Release the version: its batcher and threads, then every reference its replica holds (the replica and
        its batcher refer to each other: without this the model would wait for a full garbage collection)."""
        replica, self.replica = self.replica, None
        if replica is None:
            return
        replica.close_pipeline()
        if replica is not replica.versions.service:  # a copy (serve_self serves the service object itself)
            replica.__dict__.clear()


# --- what the management route and the 503 say -------------------------------------------------------------


class BuildProgress(BaseModel):
    state: str = Field(description="queued, training, exporting, done or failed (the background demo build)")
    epoch: int | None = Field(None, description="epochs finished")
    epochs: int | None = Field(None, description="epochs planned (early stopping may end sooner)")
    elapsed_s: float | None = Field(None, description="seconds since this task's build started")
    expected_s: float | None = Field(None, description="how long this task's build took on 2 CPU cores")
    reason: str | None = Field(None, description="why it failed")


class StoredVersion(BaseModel):
    tag: str
    created: str = Field(description="ISO 8601, UTC")
    serving: bool = Field(description="whether this version answers requests now")
    files: list[str] = Field(description="files of the entry (model.pt, model.onnx, ...)")


class LoadError(BaseModel):
    tag: str
    reason: str
    at: str = Field(description="ISO 8601, UTC")


class ModelsStatus(BaseModel):
    task: str
    state: Literal["ready", "loading", "building", "waiting", "failed"] = Field(
        description="ready: a version serves; otherwise why none does yet"
    )
    serving: str | None = Field(description="the version answering requests (none: no trained model needed)")
    pinned: str | None = Field(description="the pinned version; null: the newest entry is followed")
    detail: str = Field(description="what is happening, in plain words")
    build: BuildProgress | None = Field(None, description="the background demo build of this task, when one runs")
    last_error: LoadError | None = Field(None, description="the last version that failed to load, and why")
    versions: list[StoredVersion] = Field(description="the store's entries of this task, newest first")


class PinRequest(BaseModel):
    tag: str = Field(
        description="<task>:<version> (or the version alone, in full) to load and pin, or 'latest' to follow the "
        "newest entry again",
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?$",
    )


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


# --- the versions of one service ----------------------------------------------------------------------------


class Versions:
    """The version ``service`` serves (``serving``), loading, pinning and watching the store (module docstring).

    ``acquire`` / ``release`` bracket every request; the lock guards only the served version and the in-flight
    counts (a load runs outside it, under ``loading``, one at a time)."""

    def __init__(self, service: Any, pinned: str | None, poll_s: float, build_status: str = "") -> None:
        self.service = service
        self.task: str = service.task
        self.pinned = (
            None if pinned in ("", "latest", self.task, f"{self.task}:latest") else full_tag(self.task, pinned)
        )
        self.poll_s = poll_s
        self.build_status = Path(build_status) if build_status else None
        self.serving: Version | None = None
        self.state = "waiting"
        self.last_error: LoadError | None = None
        self.failed: dict[str, int] = {}  # tag -> the model.yaml mtime that failed (not tried again until it changes)
        self.incomplete: dict[tuple[str, int], str] = {}  # (tag, model.yaml mtime) -> what it lacks
        self.lock = threading.Lock()
        self.loading = threading.Lock()
        self.stopped = threading.Event()
        self.watcher: threading.Thread | None = None
        self.seen: tuple | None = None  # the fingerprint of the store at the last look

    # requests

    def acquire(self) -> Version | None:
        with self.lock:
            if (version := self.serving) is not None:
                version.inflight += 1
            return version

    def release(self, version: Version) -> None:
        with self.lock:
            version.inflight -= 1
            close = version.retired and version.inflight == 0
        if close:
            version.close()

    # loading

    def start(self) -> None:
        """The first load (before the service reports ready), then the watcher."""
        try:
            if self.service.answers_without_model:
                self.install(self.service.replica(None), NO_MODEL, 0)
            self.refresh()
        finally:  # whatever the first look found, later ones may find better
            if self.poll_s > 0:
                self.watcher = threading.Thread(target=self.watch, name=f"{self.task}-versions", daemon=True)
                self.watcher.start()

    def watch(self) -> None:
        while not self.stopped.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # the store itself unreadable: try again at the next poll
                log.exception("%s: looking for a newer model failed", self.task)

    def fingerprint(self) -> tuple[str, int] | None:
        """What changes when the wanted entry does: its version and its model.yaml's mtime, read without parsing
        anything (a look at the store costs microseconds, not the ~20 ms of reading an entry's YAML under the
        GIL). None when it cannot be told (no entry, or no ``latest`` pointer yet)."""
        from services.bentoml_private import model_store_dir

        name, _, version = (self.pinned or f"{self.task}:latest").partition(":")
        folder = model_store_dir() / name
        try:
            if version == "latest":
                version = (folder / "latest").read_text().strip()
            return f"{name}:{version}", (folder / version / "model.yaml").stat().st_mtime_ns
        except OSError:
            return None

    def refresh(self) -> None:
        """Load the wanted entry if it is not the one serving (and did not fail as it is now). Nothing happens
        unless the fingerprint changed since the last complete look; a look during which it changed (an exporter
        rewriting model.yaml) does not count, so the next one reads the entry again."""
        before = self.fingerprint()
        if before is not None and before == self.seen:
            return
        with self.loading:
            entry = self.wanted()
            if entry is None or self.fingerprint() != before:
                return
            tag, stamp = before if before is not None else (str(entry.tag), stamp_of(entry))
            current = self.serving
            done = current is not None and (current.tag, current.stamp) == (tag, stamp)
            if not done and self.failed.get(tag) != stamp and (tag, stamp) not in self.incomplete:
                self._load(entry, stamp)
            self.seen = before

    def pin(self, tag: str) -> None:
        """Serve ``tag`` (``<task>:<version>`` or the version alone, in full) and stay on it; ``latest``: follow
        the newest entry again. Raises :class:`NotInStore`, :class:`Busy`, or what loading raised (the version
        serving before keeps serving then)."""
        from tasks.store import entry_for_task

        if not self.loading.acquire(blocking=False):
            raise Busy("another version is being loaded; try again when it is done")
        try:
            self.seen = None  # look properly at the next refresh
            if tag in ("latest", f"{self.task}:latest"):
                self.pinned = None
            else:
                tag = full_tag(self.task, tag)
                try:
                    entry = entry_for_task(self.task, tag)
                except FileNotFoundError as e:
                    raise NotInStore(str(e)) from None
                if str(entry.tag) != tag:  # BentoML takes a prefix of a version: a pin names one exactly
                    raise NotInStore(f"no model {tag!r} in the store (did you mean {entry.tag}?)")
                stamp = stamp_of(entry)
                current = self.serving
                if current is None or (current.tag, current.stamp) != (tag, stamp):
                    self._load(entry, stamp, quiet=False)
                self.pinned = tag
        finally:
            self.loading.release()
        if self.pinned is None:
            self.refresh()

    def wanted(self):
        """The entry to serve: the pinned one, else the task's newest; None when the store has none."""
        from bentoml.exceptions import NotFound

        from tasks.store import entry_for_task

        try:
            return entry_for_task(self.task, self.pinned or f"{self.task}:latest")
        except (NotFound, FileNotFoundError):
            return None

    def _load(self, entry, stamp: int, quiet: bool = True) -> None:
        from services.metrics import model_loaded

        tag = str(entry.tag)
        if self.serving is None:
            self.state = "loading"
        started = time.perf_counter()
        try:
            replica = self.service.replica(entry)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            if isinstance(e, Incomplete):  # not a failure: the entry is still being written
                self.incomplete = {(tag, stamp): reason}  # only the newest matters
                log.info("%s: %s not loaded yet: %s", self.task, tag, reason)
            else:
                self.failed[tag] = stamp
                self.last_error = LoadError(tag=tag, reason=reason, at=iso(time.time()))
                keeps = f"; {self.serving.tag} keeps serving" if self.serving else ""
                log.error("%s: model %s not loaded%s: %s", self.task, tag, keeps, reason)
                model_loaded(self.task, tag, "failed")
            if self.serving is None:
                self.state = "waiting" if isinstance(e, Incomplete) else "failed"
            if not quiet:
                raise
            return
        self.install(replica, tag, stamp)
        model_loaded(self.task, tag, "loaded")
        log.info("%s: serving %s (loaded and warmed up in %.1f s)", self.task, tag, time.perf_counter() - started)

    def install(self, replica: Any, tag: str, stamp: int) -> None:
        """Swap ``replica`` in; the old version is closed now if idle, else by its last request."""
        from services.metrics import model_serving

        version = Version(replica, tag, stamp)
        with self.lock:
            old, self.serving = self.serving, version
            close = False
            if old is not None:
                old.retired = True
                close = old.inflight == 0
        self.state = "ready"
        if old is not None:
            model_serving(self.task, old.tag, False)
            if close:
                old.close()
        model_serving(self.task, tag, True)

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            version, self.serving = self.serving, None
        if version is not None:
            version.close()

    # what is shown

    def build(self) -> BuildProgress | None:
        """This task's entry in the background builder's status file, if one is being written."""
        if self.build_status is None:
            return None
        try:
            doc = json.loads(self.build_status.read_text())
        except (OSError, ValueError):
            return None
        entry = doc.get("tasks", {}).get(self.task)
        if not isinstance(entry, dict):
            return None
        known = {k: v for k, v in entry.items() if k in BuildProgress.model_fields}
        if entry.get("started") and entry.get("state") in ("training", "exporting"):
            known["elapsed_s"] = round(time.time() - entry["started"], 1)
        return BuildProgress(**known)

    def summary(self) -> tuple[str, Version | None, BuildProgress | None]:
        """(state, the version serving, the build's progress): cheap, nothing read but the build status file."""
        serving = self.serving
        build = self.build()
        state = self.state
        if state == "waiting" and build is not None and build.state != "done":
            state = "failed" if build.state == "failed" else "building"
        return state, serving, build

    def status(self) -> ModelsStatus:
        """Everything ``GET /models`` shows (lists the store: not for the event loop)."""
        state, serving, build = self.summary()
        return ModelsStatus(
            task=self.task,
            state=state,
            serving=serving.tag if serving else None,
            pinned=self.pinned,
            detail=self.detail(state, serving, build),
            build=build,
            last_error=self.last_error,
            versions=self.stored(serving),
        )

    def detail(self, state: str, serving: Version | None, build: BuildProgress | None) -> str:
        if state == "ready" and serving is not None:
            if serving.tag == NO_MODEL:
                return f"answering without a trained model ({self.service.without_model_note()}); {self.waiting(build)}"
            follows = "pinned" if self.pinned else "following the newest entry"
            return f"serving {serving.tag} ({follows})"
        if state == "loading":
            return "loading its model and warming it up"
        if state == "failed":
            reason = (build.reason if build and build.state == "failed" else None) or (
                self.last_error.reason if self.last_error else "unknown"
            )
            return f"no model: {reason}"
        return self.waiting(build)

    def waiting(self, build: BuildProgress | None = None) -> str:
        """Why no trained model serves yet, and when one will."""
        build = build or self.build()
        if build is not None and build.state == "failed":
            return f"no model: its demo build failed: {build.reason}"
        if build is not None and build.state != "done":
            return f"no model yet: the demo model is {describe(build)}; it is loaded as soon as it lands"
        if self.last_error is not None:
            return f"no model: {self.last_error.tag} did not load: {self.last_error.reason}"
        if self.incomplete:
            return f"no model yet: {next(iter(self.incomplete.values()))}"
        return (
            f"no model yet: the store has no {self.pinned or self.task} entry; build one with `python -m training.demo "
            f"{self.task}` (or `make models`) and it is loaded as soon as it lands"
        )

    def stored(self, serving: Version | None) -> list[StoredVersion]:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            entries = bentoml.models.list(self.task)
        except NotFound:
            return []
        rows = []
        for m in sorted(entries, key=lambda m: m.info.creation_time, reverse=True):
            if m.info.metadata.get("task") != self.task:
                continue
            rows.append(
                StoredVersion(
                    tag=str(m.tag),
                    created=m.info.creation_time.astimezone(timezone.utc).isoformat(timespec="seconds"),
                    serving=serving is not None and serving.tag == str(m.tag),
                    files=sorted(m.info.metadata.get("files", {})),
                )
            )
        return rows

    def not_ready(self) -> tuple[str, int]:
        """The 503 message and Retry-After (seconds) while no version serves (cheap enough for the event loop)."""
        state, serving, build = self.summary()
        retry = 60 if state == "failed" else max(1, min(30, round(self.poll_s * 2) or 10))
        return self.detail(state, serving, build), retry


def describe(build: BuildProgress) -> str:
    if build.state == "queued":
        return "queued behind the other demo builds"
    parts = [build.state]
    if build.epoch is not None and build.epochs:
        parts.append(f"epoch {build.epoch} of {build.epochs}")
    if build.elapsed_s is not None:
        took = f"{build.elapsed_s / 60:.1f} min"
        if build.expected_s:
            took += f" of about {build.expected_s / 60:.0f}"
        parts.append(took)
    return ", ".join(parts)


def stamp_of(entry) -> int:
    try:
        return (Path(entry.path) / "model.yaml").stat().st_mtime_ns
    except OSError:
        return 0


def full_tag(task: str, tag: str) -> str:
    """``<task>:<version>`` of a tag given with or without its task."""
    return tag if ":" in tag else f"{task}:{tag}"
