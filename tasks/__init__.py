"""The contract every stage shares: one entry per task in ``TASKS``.

Training, export and serving all look up the same spec (:class:`~tasks.spec.ImageClassifierSpec`,
:class:`~tasks.spec.DetectorSpec`, :class:`~tasks.spec.SpeechSpec`, :class:`~tasks.spec.TaggerSpec`,
:class:`~tasks.spec.PaletteSpec`) here, so that a model sees in production exactly what it saw in training; its
kind (:mod:`tasks.kinds`) says which code each stage runs for it. Importing this package imports no deep-learning
framework.

**A task of an existing kind from outside this repository** is its spec and its data generator, nothing else:

- in one process (a test, a notebook): ``tasks.register(spec)``;
- for every process the suite starts (``python -m training`` / ``exporters`` / ``benchmarks``, ``bentoml serve``
  and its workers, ``python -m k8s.generate``): a module that defines ``TASKS``, a sequence of specs, named in the
  environment variable ``SUITE_TASK_MODULES`` (comma-separated import paths, importable from the working
  directory or the environment), for example ``SUITE_TASK_MODULES=mylab.tasks python -m training texture``.
  Those modules are imported when this package is, and their specs registered; nothing else happens at import.
  On Kubernetes, generate the manifests with the same variable set: every pod then gets it too (``k8s/``).

A task's name is its route (``/v1/<name>/``), its service class (``services.<module>:<Name>``) and its Kubernetes
objects' name, so it is lowercase letters and digits.
"""

from __future__ import annotations

import importlib
import os
import re

from tasks.asr import ASR
from tasks.histopathology import HISTOPATHOLOGY
from tasks.keyphrase import KEYPHRASE
from tasks.kinds import kind_of
from tasks.malaria import MALARIA
from tasks.palette import PALETTE
from tasks.spec import DetectorSpec, ImageClassifierSpec, PaletteSpec, SpeechSpec, TaggerSpec
from tasks.thermal import THERMAL
from tasks.tumor import TUMOR

TaskSpec = ImageClassifierSpec | DetectorSpec | SpeechSpec | TaggerSpec | PaletteSpec
TASK_MODULES_ENV = "SUITE_TASK_MODULES"
NAME = re.compile(r"[a-z][a-z0-9]*")

TASKS: dict[str, TaskSpec] = {
    MALARIA.name: MALARIA,
    TUMOR.name: TUMOR,
    ASR.name: ASR,
    KEYPHRASE.name: KEYPHRASE,
    PALETTE.name: PALETTE,
    HISTOPATHOLOGY.name: HISTOPATHOLOGY,
    THERMAL.name: THERMAL,
}


def get_task(name: str) -> TaskSpec:
    """Return the registered spec for ``name``, or fail with the list of known tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def register(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to ``TASKS`` (registering the same spec again is a no-op); returns it.

    Fails on a name that is not lowercase letters and digits, a name taken by another spec, a kind the suite does
    not have, or a spec that is not its kind's spec class."""
    if not NAME.fullmatch(spec.name):
        raise ValueError(f"task name {spec.name!r}: use lowercase letters and digits (it names a route and a class)")
    kind_of(spec)
    if TASKS.get(spec.name, spec) != spec:
        raise ValueError(f"task {spec.name!r} is already registered with a different spec")
    TASKS[spec.name] = spec
    return spec


def _register_modules(names: str) -> None:
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"{TASK_MODULES_ENV}: cannot import {name!r}: {e}") from e
        specs = getattr(module, "TASKS", None)
        if specs is None:
            raise ValueError(f"{TASK_MODULES_ENV}: module {name!r} defines no TASKS (a sequence of task specs)")
        for spec in specs.values() if isinstance(specs, dict) else specs:
            register(spec)


_register_modules(os.environ.get(TASK_MODULES_ENV, ""))
