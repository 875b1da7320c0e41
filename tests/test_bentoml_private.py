"""BentoML's private APIs, all behind ``services/bentoml_private.py``: each is where the suite expects it in the
installed BentoML, and a BentoML that moved one fails with a message naming it (simulated by removing it)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import bentoml
import pytest
from fastapi import FastAPI

from benchmarks.server import ROOT
from services import bentoml_private
from services.bentoml_private import MovedInBentoML


def test_the_remote_proxy_and_its_address():
    proxy_class = bentoml_private.remote_proxy_class()
    for url in ("file:///tmp/task.sock", "tcp://127.0.0.1:3001"):
        assert bentoml_private.dependency_url(proxy_class(url)) == url
    with pytest.raises(RuntimeError, match="without --development"):
        bentoml_private.dependency_url(object())  # what --development hands the gateway


def test_uri_to_path_reads_the_socket_uris_bentoml_writes():
    assert bentoml_private.uri_to_path("file:///tmp/some%20dir/task.sock") == "/tmp/some dir/task.sock"


def test_mounted_apps_of_a_service():
    app = FastAPI()

    @bentoml.service
    @bentoml.asgi_app(app, path="/v1/probe")
    class Probe:
        pass

    assert [(a, path) for a, path, _ in bentoml_private.mounted_apps(Probe)] == [(app, "/v1/probe")]


def test_the_openapi_page_ships_with_bentoml():
    page = bentoml_private.openapi_page()
    # Swagger UI from BentoML's /static_content (its initializer reads ./docs.json), no CDN
    assert "./static_content/swagger-initializer.js" in page.read_text()


def test_the_worker_module_is_what_bentoml_runs_its_workers_as():
    assert importlib.util.find_spec(bentoml_private.WORKER_MODULE) is not None
    serving = Path(importlib.util.find_spec("_bentoml_impl.server.serving").origin).read_text()
    assert f'"{bentoml_private.WORKER_MODULE}"' in serving, "BentoML's arbiter runs its workers as another module"


@pytest.mark.parametrize(
    "module, attr, call",
    [
        ("_bentoml_impl.client", "RemoteProxy", bentoml_private.remote_proxy_class),
        ("bentoml._internal.utils.uri", "uri_to_path", lambda: bentoml_private.uri_to_path("file:///x")),
    ],
)
def test_a_moved_symbol_fails_naming_it(monkeypatch, module, attr, call):
    monkeypatch.delattr(importlib.import_module(module), attr)
    with pytest.raises(MovedInBentoML, match=re.escape(f"BentoML {bentoml.__version__} has no {module}.{attr}")):
        call()


def test_a_moved_module_fails_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "_bentoml_impl.server", None)  # import then raises ImportError
    with pytest.raises(MovedInBentoML, match=r"has no _bentoml_impl\.server"):
        bentoml_private.openapi_page()
    proxy = bentoml_private.remote_proxy_class()("tcp://127.0.0.1:1")
    monkeypatch.setattr(type(proxy), "to_async", property(lambda self: object()))
    with pytest.raises(MovedInBentoML, match=r"RemoteProxy\.to_async\.url moved"):
        bentoml_private.dependency_url(proxy)
    with pytest.raises(MovedInBentoML, match=r"Service\.mount_apps moved"):
        bentoml_private.mounted_apps(object())


def test_nothing_else_uses_bentoml_private_apis():
    private = re.compile(r"\b(_bentoml_impl|_bentoml_sdk|bentoml\._internal)\b")
    allowed = {ROOT / "services" / "bentoml_private.py", Path(__file__).resolve()}
    users = [
        str(path.relative_to(ROOT))
        for folder in ("services", "benchmarks", "tests", "tasks", "training", "exporters")
        for path in (ROOT / folder).rglob("*.py")
        if path.resolve() not in allowed and private.search(path.read_text())
    ]
    assert not users, f"private BentoML APIs outside services/bentoml_private.py: {users}"
