"""The header deadline (services/connections.py) on a real uvicorn server in this process."""

from __future__ import annotations

import socket
import threading
import time

import pytest


def serve(monkeypatch, header_s: float, idle_s: float):
    """uvicorn with the deadlines installed, serving a one-line app on a free port; yields the port."""
    import uvicorn
    from uvicorn.protocols.http import auto

    from benchmarks.server import free_port
    from services import connections

    monkeypatch.setattr(auto, "AutoHTTPProtocol", auto.AutoHTTPProtocol)  # restored afterwards
    assert connections.install(header_s, idle_s)

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield port
    srv.should_exit = True
    thread.join(5)


@pytest.fixture
def server(monkeypatch):
    """Headers within 1 s; kept-alive connections idle for 30 s (so only the header deadline shows)."""
    yield from serve(monkeypatch, 1.0, 30.0)


@pytest.fixture
def idle_server(monkeypatch):
    yield from serve(monkeypatch, 10.0, 1.0)


def answer(s: socket.socket) -> tuple[bytes, float]:
    start = time.perf_counter()
    data = s.recv(4096)
    return data, time.perf_counter() - start


def test_silent_and_dripping_clients_get_408_at_the_deadline(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        data, took = answer(s)
        assert data.startswith(b"HTTP/1.1 408") and 0.8 < took < 3, (data, took)
        assert s.recv(10) == b""  # closed
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        start = time.perf_counter()
        s.sendall(b"GET / HTTP/1.1\r\n")
        for i in range(3):
            time.sleep(0.4)
            try:
                s.sendall(f"X-{i}: y\r\n".encode())
            except OSError:
                break
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 408") and time.perf_counter() - start < 3, data


def test_prompt_requests_are_served_and_kept_alive_past_the_deadline(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        for _ in range(3):  # each request's headers arrive at once: the deadline never fires
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data, _ = answer(s)
            assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok"), data
            time.sleep(0.6)  # 1.8 s on one connection in all, past the 1 s deadline
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(s)[0].startswith(b"HTTP/1.1 200")


def test_an_idle_kept_alive_connection_is_closed_at_the_idle_timeout(idle_server):
    with socket.create_connection(("127.0.0.1", idle_server), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer(s)[0].startswith(b"HTTP/1.1 200")
        data, took = answer(s)  # nothing more is sent: uvicorn's keep-alive timer, set from idle_timeout_s
        assert data == b"" and 0.8 < took < 3, (data, took)


def test_install_keeps_the_shortest_deadline(monkeypatch):
    from uvicorn.protocols.http import auto

    from services import connections

    monkeypatch.setattr(auto, "AutoHTTPProtocol", auto.AutoHTTPProtocol)
    assert connections.install(20.0) and connections.install(5.0, 30.0) and connections.install(9.0, 3.0)
    assert (auto.AutoHTTPProtocol.header_timeout_s, auto.AutoHTTPProtocol.idle_timeout_s) == (5.0, 3.0)
