"""Every use of BentoML's private APIs, in one place (BentoML 1.4; ``pyproject.toml`` pins ``bentoml>=1.4,<1.5``).

The gateway needs a few things BentoML has no public API for: the address BentoML gave a dependency that runs in
its own processes, a unix-socket path from that address, the task app BentoML mounted, the OpenAPI page that ships
inside BentoML, and (tests) the module BentoML's worker processes run. Each function says what it relies on; an
upgrade that moves one fails here, by name, and ``tests/test_bentoml_private.py`` checks all of them against the
installed BentoML without starting a server. Nothing else in ``services/``, ``benchmarks/`` or ``tests/`` imports
``_bentoml_impl``, ``_bentoml_sdk`` or ``bentoml._internal``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any


class MovedInBentoML(ImportError):
    """A private BentoML API this suite relies on is not where it was (a BentoML upgrade moved or removed it)."""


def _private(module: str, attr: str | None = None) -> Any:
    """``module`` (or ``module.attr``) from BentoML's private packages, or :class:`MovedInBentoML` naming it."""
    import bentoml

    name = f"{module}.{attr}" if attr else module
    try:
        found = importlib.import_module(module)
        return getattr(found, attr) if attr else found
    except (ImportError, AttributeError) as e:
        raise MovedInBentoML(
            f"BentoML {bentoml.__version__} has no {name} (services/bentoml_private.py relies on it): {e}"
        ) from e


# The module BentoML's arbiter runs each service worker as (``python -m _bentoml_impl.worker.service ...``): the
# fault tests find worker processes by it on their command lines.
WORKER_MODULE = "_bentoml_impl.worker.service"


def remote_proxy_class() -> type:
    """``_bentoml_impl.client.RemoteProxy``: what ``bentoml.depends`` gives a service whose dependency runs in its
    own processes (``--development`` gives the service object itself instead)."""
    return _private("_bentoml_impl.client", "RemoteProxy")


def dependency_url(dep: Any) -> str:
    """The address BentoML gave a dependency running in its own processes: ``file://<socket>`` or ``tcp://h:p``.

    Relies on ``RemoteProxy.to_async`` being a client with a ``url`` attribute. Fails (RuntimeError) when the
    dependency is not a remote proxy, that is when served with ``--development``."""
    if not isinstance(dep, remote_proxy_class()):
        raise RuntimeError("serve the gateway without --development: each task runs in its own processes")
    try:
        return dep.to_async.url
    except AttributeError as e:
        raise MovedInBentoML(f"RemoteProxy.to_async.url moved (services/bentoml_private.py relies on it): {e}") from e


def uri_to_path(uri: str) -> str:
    """``file://`` URI -> filesystem path (the unix socket of a dependency), with BentoML's own
    ``bentoml._internal.utils.uri.uri_to_path``: BentoML builds these URIs, so its inverse reads them."""
    return _private("bentoml._internal.utils.uri", "uri_to_path")(uri)


def mounted_apps(svc: Any) -> list[tuple[Any, str, str]]:
    """The ASGI apps mounted on a service (``@bentoml.asgi_app``): ``(app, path, name)`` tuples, from the
    service object's ``mount_apps`` attribute (``_bentoml_sdk.service.factory.Service``)."""
    try:
        return list(svc.mount_apps)
    except AttributeError as e:
        raise MovedInBentoML(f"Service.mount_apps moved (services/bentoml_private.py relies on it): {e}") from e


def openapi_page() -> Path:
    """BentoML's own OpenAPI page (its assets ship with BentoML: no CDN), ``main-openapi.html`` beside the
    ``_bentoml_impl.server`` package. It reads ``/docs.json``."""
    page = Path(_private("_bentoml_impl.server").__file__).parent / "main-openapi.html"
    if not page.is_file():
        raise MovedInBentoML(f"{page} is missing (services/bentoml_private.py serves it as /docs)")
    return page


def model_store_dir() -> Path:
    """The model store's folder (``$BENTOML_HOME/models``), as BentoML's configuration container resolves it
    (``BentoMLContainer.model_store_dir``): the services' watchers read its ``<name>/latest`` files directly."""
    container = _private("bentoml._internal.configuration.containers", "BentoMLContainer")
    try:
        return Path(container.model_store_dir.get())
    except AttributeError as e:
        raise MovedInBentoML(
            f"BentoMLContainer.model_store_dir moved (services/bentoml_private.py relies on it): {e}"
        ) from e
