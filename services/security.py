"""Optional API-key authentication, one ASGI middleware for every service and the gateway.

Keys come from the environment, never from the command line (which other users of the host can read):

- ``SUITE_API_KEYS``: comma-separated keys; ``SUITE_API_KEYS_FILE``: a file with one key per line (``#`` comments).
  Neither set: authentication is off.
- ``SUITE_AUTH_HEALTH`` = ``public`` (default) or ``key``: whether ``/livez`` and ``/readyz`` need a key (probes
  usually cannot send one). ``SUITE_AUTH_METRICS`` = ``key`` (default) or ``public``: the same for ``/metrics``.

A client sends its key as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; every configured key is compared in
constant time. The web page and its assets (``/``, ``/static/``, ``/tasks.json``) and the API documentation (``/docs``,
``/docs.json``) stay public: they hold no data. A refused request gets 401 ``{"error": ...}`` and nothing about
the key is logged.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

ALWAYS_PUBLIC = ("/docs", "/docs.json", "/tasks.json", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/", "/static_content/")


@dataclass(frozen=True)
class AuthConfig:
    keys: tuple[bytes, ...] = ()
    public: frozenset[str] = frozenset()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


def load_auth_config(env: Mapping[str, str] = os.environ) -> AuthConfig:
    """The configuration the module docstring describes; a bad value is an error, not a silent default."""
    keys = [k.strip() for k in env.get("SUITE_API_KEYS", "").split(",") if k.strip()]
    if path := env.get("SUITE_API_KEYS_FILE"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise ValueError(f"SUITE_API_KEYS_FILE: cannot read {path}: {e.strerror}") from e
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    public = {"/", *ALWAYS_PUBLIC}
    for name, paths, default in (
        ("SUITE_AUTH_HEALTH", ("/livez", "/readyz", "/healthz"), "public"),
        ("SUITE_AUTH_METRICS", ("/metrics",), "key"),
    ):
        value = env.get(name, default)
        if value not in ("public", "key"):
            raise ValueError(f"{name} must be 'public' or 'key', not {value!r}")
        if value == "public":
            public.update(paths)
    return AuthConfig(tuple(k.encode() for k in keys), frozenset(public))


class ApiKeyMiddleware:
    """Refuses HTTP requests without a valid key (when keys are configured); see the module docstring."""

    def __init__(self, app: ASGIApp, config: AuthConfig | None = None) -> None:
        self.app = app
        self.config = config if config is not None else load_auth_config()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.config.enabled or self.is_public(scope["path"]):
            return await self.app(scope, receive, send)
        if self.valid(self.presented(scope)):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "missing or invalid API key: send it as X-API-Key or Authorization: Bearer"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    def is_public(self, path: str) -> bool:
        return path in self.config.public or path.startswith(PUBLIC_PREFIXES)

    @staticmethod
    def presented(scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                return value.strip()
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
        return b""

    def valid(self, key: bytes) -> bool:
        # every key is compared, whatever matched, so that timing says nothing about which one is near
        found = False
        for candidate in self.config.keys:
            found |= hmac.compare_digest(key, candidate)
        return found and bool(key)
