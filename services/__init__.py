"""BentoML services, one per task in the registry (``tasks.TASKS``), and the gateway in front of them."""

from __future__ import annotations

# Tasks of these kinds share one service module (a task is configuration); every other task has its own module.
SHARED_MODULES = {"image-classification": "image_classifier"}


def target(task: str) -> str:
    """The import string of ``task``'s service, as ``bentoml serve`` takes it: ``services.<module>:<Task>``."""
    from tasks import get_task

    return f"services.{SHARED_MODULES.get(get_task(task).kind, task)}:{task.capitalize()}"


def load(task: str):
    """``task``'s BentoML service object."""
    import importlib

    module, _, name = target(task).partition(":")
    return getattr(importlib.import_module(module), name)
