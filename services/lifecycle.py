"""What every task service shares at start: stay up whatever happens to its model, and say why in one line.

A task service subclasses :class:`ModelService` and puts its start in ``load()``. When that fails (a tool missing,
a bad argument), the worker does not crash and restart in a loop: it logs one line naming the cause and stays up,
not ready (``/readyz`` 503, so Kubernetes sends it no traffic). Which model it serves, and answering 503 "no model
yet" with ``Retry-After`` until one is loaded, is :mod:`services.versions`.
"""

from __future__ import annotations

import logging

# BentoML routes its own loggers to the server's output; a child of "bentoml" shares that configuration.
log = logging.getLogger("bentoml.suite")


class ModelService:
    """Base class of the task services: ``__init__`` runs ``load()``; ``ready`` while a model version serves."""

    task = "model"
    versions = None  # services.versions.Versions, once load() has run

    def __init__(self) -> None:
        try:
            self.load()
        except Exception as e:  # any failure: stay up and not ready, with the reason in the log
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            log.error("%s: service not started, not ready: %s", self.task, reason)

    def load(self) -> None:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return self.versions is not None and self.versions.serving is not None

    async def __is_ready__(self) -> bool:
        return self.ready

    def set_body_limit(self, max_body_mb: float) -> None:
        """``self.body_limit`` in bytes (uploads stay in memory: nothing a client sends is written to disk)."""
        self.body_limit = int(max_body_mb * 1024 * 1024)
