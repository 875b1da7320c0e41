"""Progress of a training run, for whoever watches it: the background demo build writes it to its status file
(``python -m training.demo --status FILE``), which the services show while their model is building.

The fit loops call :func:`epoch_done`; nothing is reported unless a listener is set."""

from __future__ import annotations

from collections.abc import Callable

listener: Callable[[int, int], None] | None = None  # (epochs finished, epochs planned)


def epoch_done(epoch: int, epochs: int) -> None:
    if listener is not None:
        listener(epoch, epochs)
