"""A deadline on request headers, for every server of the suite.

uvicorn (which BentoML runs) bounds only the wait between requests on a kept-alive connection: a connection that
never sends a byte, or sends a header line every few seconds, is held for as long as the client likes, and a few
hundred of them exhaust the server's file descriptors (slowloris). Here a connection must finish each request's
headers within ``header_timeout_s`` of connecting or of the previous response, or it gets ``408`` and is closed;
a kept-alive connection that sends nothing for ``idle_timeout_s`` after an answer is closed (uvicorn's own
keep-alive timeout, set here because BentoML does not pass it on).
Slow bodies are the request timeout's business (``timeout_s``: 504). A cap on connections per client belongs to
the front proxy (docs/operations.md, "Running behind a proxy").

uvicorn chooses its protocol class when it starts, from ``uvicorn.protocols.http.auto.AutoHTTPProtocol``;
:func:`install` puts a subclass of the httptools protocol there (BentoML's workers import the service, so its
module's call to :func:`install` runs before uvicorn starts).
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel, Field

log = logging.getLogger("suite.connections")


class ConnectionArgs(BaseModel):
    """The arguments every server of the suite takes for its connections (task services and the gateway)."""

    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a connection's request headers must arrive within this (408 past)"
    )
    idle_timeout_s: float = Field(5.0, gt=0, le=3600, description="a kept-alive connection idle this long is closed")

    def install(self) -> bool:
        return install(self.header_timeout_s, self.idle_timeout_s)


TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


def deadline_protocol(base: type, timeout_s: float, idle_s: float) -> type:
    """``base`` (uvicorn's httptools protocol) with the header deadline and the idle timeout."""

    class HeaderDeadline(base):
        header_timeout_s = timeout_s
        idle_timeout_s = idle_s

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if (handle := getattr(self, "_header_deadline", None)) is not None:
                handle.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.write(TIMED_OUT)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timeout_keep_alive = self.idle_timeout_s  # uvicorn arms it after each answer
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers, on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeaderDeadline.__qualname__ = HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline


def install(header_timeout_s: float, idle_timeout_s: float = 5.0) -> bool:
    """Make uvicorn's default HTTP protocol enforce ``header_timeout_s`` and ``idle_timeout_s``; False (and a
    warning) when uvicorn does not use httptools here (neither is then enforced)."""
    from uvicorn.protocols.http import auto

    current = auto.AutoHTTPProtocol
    if getattr(current, "header_timeout_s", None) is not None:  # installed already: keep the shortest
        current.header_timeout_s = min(current.header_timeout_s, header_timeout_s)
        current.idle_timeout_s = min(current.idle_timeout_s, idle_timeout_s)
        return True
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        HttpToolsProtocol = None
    if current is not HttpToolsProtocol:
        log.warning("uvicorn does not use httptools here: request headers have no deadline")
        return False
    auto.AutoHTTPProtocol = deadline_protocol(current, header_timeout_s, idle_timeout_s)
    return True
