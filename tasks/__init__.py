"""The contract every stage shares: one entry per task in ``TASKS``.

Training, export and serving all look up the same spec (:class:`~tasks.spec.ImageClassifierSpec`,
:class:`~tasks.spec.DetectorSpec`, :class:`~tasks.spec.SpeechSpec`, :class:`~tasks.spec.TaggerSpec`,
:class:`~tasks.spec.PaletteSpec`) here, so that a model sees in production exactly what it saw in training.
Importing this package imports no deep-learning framework.
"""

from __future__ import annotations

from tasks.asr import ASR
from tasks.histopathology import HISTOPATHOLOGY
from tasks.keyphrase import KEYPHRASE
from tasks.malaria import MALARIA
from tasks.palette import PALETTE
from tasks.spec import DetectorSpec, ImageClassifierSpec, PaletteSpec, SpeechSpec, TaggerSpec
from tasks.thermal import THERMAL
from tasks.tumor import TUMOR

TaskSpec = ImageClassifierSpec | DetectorSpec | SpeechSpec | TaggerSpec | PaletteSpec

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
