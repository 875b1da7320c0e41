"""Optional API keys (services/security.py): the middleware alone, then a real service started with keys; CORS off
unless configured; nothing about a key in the logs."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks.server import start_server, stop_server
from services.security import ApiKeyMiddleware, AuthConfig, load_auth_config
from tests.conftest import png_bytes

KEY = "k-3f9a7c1e5b"


def statuses(config: AuthConfig, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """The answers of a tiny app behind the middleware to ``(path, headers)`` GETs."""

    async def ok(_request):
        return PlainTextResponse("ok")

    paths = ("/v1/x", "/readyz", "/livez", "/metrics", "/", "/static/app.js", "/docs.json")
    asgi = ApiKeyMiddleware(Starlette(routes=[Route(p, ok) for p in paths]), config)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://t") as client:
            return [await client.get(path, headers=headers) for path, headers in requests]

    return asyncio.run(run())


def codes(config: AuthConfig, *requests: tuple[str, dict] | str) -> list[int]:
    normal = [(r, {}) if isinstance(r, str) else r for r in requests]
    return [r.status_code for r in statuses(config, normal)]


@pytest.mark.parametrize(
    "env, expect",
    [
        ({}, AuthConfig()),
        ({"SUITE_API_KEYS": " a, b ,"}, AuthConfig((b"a", b"b"))),
    ],
)
def test_config_from_the_environment(env, expect):
    config = load_auth_config(env)
    assert config.keys == expect.keys and config.enabled == bool(expect.keys)


def test_config_from_a_file_and_bad_values(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# operators' keys\nfirst\n\n  second  \n")
    config = load_auth_config({"SUITE_API_KEYS_FILE": str(keys), "SUITE_AUTH_METRICS": "public"})
    assert config.keys == (b"first", b"second") and "/metrics" in config.public and "/readyz" in config.public
    with pytest.raises(ValueError, match="SUITE_AUTH_HEALTH"):
        load_auth_config({"SUITE_AUTH_HEALTH": "maybe"})
    with pytest.raises(ValueError, match="cannot read"):
        load_auth_config({"SUITE_API_KEYS_FILE": str(tmp_path / "missing")})


def test_middleware_refuses_without_a_valid_key():
    config = load_auth_config({"SUITE_API_KEYS": f"{KEY},other"})
    assert codes(
        config,
        "/v1/x",
        ("/v1/x", {"X-API-Key": "wrong"}),
        ("/v1/x", {"X-API-Key": KEY}),
        ("/v1/x", {"Authorization": f"Bearer {KEY}"}),
        ("/v1/x", {"Authorization": f"Basic {KEY}"}),
        ("/v1/x", {"X-API-Key": "other"}),
        ("/v1/x", {"X-API-Key": ""}),
    ) == [401, 401, 200, 200, 401, 200, 401]
    (refused,) = statuses(config, [("/v1/x", {})])
    assert refused.headers["www-authenticate"] == "Bearer" and "API key" in refused.json()["error"]
    # health public by default, metrics not; the page and the docs always public
    assert codes(config, "/readyz", "/livez", "/", "/static/app.js", "/docs.json", "/metrics") == [200] * 5 + [401]


def test_no_keys_means_no_authentication():
    assert codes(load_auth_config({}), "/v1/x", "/metrics") == [200, 200]


def test_health_can_require_a_key_and_metrics_can_be_public():
    config = load_auth_config({"SUITE_API_KEYS": KEY, "SUITE_AUTH_HEALTH": "key", "SUITE_AUTH_METRICS": "public"})
    assert codes(config, "/readyz", "/metrics") == [401, 200]


@pytest.mark.http
def test_a_service_started_with_keys(palette_store, tmp_path):
    env = {**palette_store, "SUITE_API_KEYS": KEY}
    proc, url, log = start_server("palette", {}, env=env, log_dir=tmp_path)  # /readyz is public: it got ready
    try:
        image = png_bytes(np.full((32, 32, 3), 90, np.uint8))
        with httpx.Client(base_url=url, timeout=60) as client:
            route = "/v1/palette/extract"
            assert client.post(route, content=image, headers={"content-type": "image/png"}).status_code == 401
            ok = client.post(route, content=image, headers={"content-type": "image/png", "X-API-Key": KEY})
            assert ok.status_code == 200 and ok.json()["colors"]
            assert client.get("/metrics").status_code == 401
            assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
            # CORS is off unless configured: a cross-origin request gets no allow-origin header
            r = client.post(
                route,
                content=image,
                headers={"content-type": "image/png", "X-API-Key": KEY, "Origin": "https://x.example"},
            )
            assert "access-control-allow-origin" not in r.headers
        assert KEY not in log.read_text()
    finally:
        stop_server(proc)
