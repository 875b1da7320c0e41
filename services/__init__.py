"""BentoML services, one per task in the registry (``tasks.TASKS``), and the gateway in front of them."""

from __future__ import annotations


def target(task: str) -> str:
    """The import string of ``task``'s service, as ``bentoml serve`` takes it: ``<kind's module>:<Task>`` (the
    kind's module serves every task of that kind, :mod:`tasks.kinds`)."""
    from tasks import get_task
    from tasks.kinds import kind_of

    return kind_of(get_task(task)).service_target(task)


def load(task: str):
    """``task``'s BentoML service object."""
    import importlib

    module, _, name = target(task).partition(":")
    return getattr(importlib.import_module(module), name)
