"""What every task service shares at start: load the model, or stay up, not ready, and say why in one line.

A task service subclasses :class:`ModelService` and puts its loading in ``load()``. When loading fails (a model
file whose checksum does not match, a missing export, a missing tool), the worker does not crash and restart in a
loop: it logs one line naming the cause, ``/readyz`` stays 503 (so Kubernetes sends it no traffic), and every
task route answers 503 ``{"error": ...}`` with ``Retry-After`` (:class:`ReadinessGate`) instead of a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

# BentoML routes its own loggers to the server's output; a child of "bentoml" shares that configuration.
log = logging.getLogger("bentoml.suite")


class ModelService:
    """Base class of the task services: ``__init__`` runs ``load()`` and records whether it succeeded."""

    task = "model"
    ready = False

    def __init__(self) -> None:
        try:
            self.load()
        except Exception as e:  # any failure: stay up and not ready, with the reason in the log
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            log.error("%s: model not loaded, service not ready: %s", self.task, reason)
        else:
            self.ready = True

    def load(self) -> None:
        raise NotImplementedError

    async def __is_ready__(self) -> bool:
        return self.ready

    def set_body_limit(self, max_body_mb: float) -> None:
        """``self.body_limit`` in bytes (uploads stay in memory: nothing a client sends is written to disk)."""
        self.body_limit = int(max_body_mb * 1024 * 1024)


NOT_READY = json.dumps({"error": "the service is not ready: its model is not loaded (the server log says why)"})


class ReadinessGate:
    """ASGI middleware for a task's API app: 503 while the service's model is not loaded. A loaded model stays
    loaded, so once the service is ready the gate opens for good and costs requests nothing more."""

    def __init__(self, app: ASGIApp, current: Callable[[], object]) -> None:
        self.app = app
        self.current = current
        self.open = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.open and scope["type"] == "http":
            self.open = self._ready()
            if not self.open:
                body = NOT_READY.encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                headers.append((b"retry-after", b"30"))
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _ready(self) -> bool:
        try:
            return bool(getattr(self.current(), "ready", False))
        except Exception:  # no instance yet
            return False
