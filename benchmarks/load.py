"""A lean HTTP/1.1 load generator: keep-alive connections, pre-encoded requests, no client library.

The client shares the machine with the server, so it must cost little per request: httpx spends several
hundred microseconds of CPU per call; this spends tens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field


def multipart_request(
    host: str, port: int, path: str, field_name: str, filename: str, data: bytes, content_type: str = "image/png"
) -> bytes:
    """A complete POST with one multipart file, ready to write to a socket."""
    return raw_request(host, port, path, *multipart_body(field_name, filename, data, content_type))


def multipart_body(field_name: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """(body, content type) of a multipart form holding one file."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def raw_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() == "close", headers


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0


async def run_load(
    host: str, port: int, requests: list[bytes], concurrency: int, total: int, timeout: float = 60.0
) -> LoadResult:
    """Send ``total`` requests (cycling through ``requests``) from ``concurrency`` connections at once."""
    result = LoadResult()
    counter = iter(range(total))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                start = time.perf_counter()
                try:
                    writer.write(requests[i % len(requests)])
                    status, _, close, _ = await asyncio.wait_for(_read_response(reader), timeout)
                except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                    status, close = 0, True
                result.latencies_s.append(time.perf_counter() - start)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status != 200:
                    result.errors += 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    return result


IDLE_S = 4.0  # an idle keep-alive connection older than this is closed rather than reused (servers keep them 5 s)


@dataclass
class OpenLoopResult:
    latencies_s: dict[int, list[float]] = field(default_factory=dict)  # per status (0: no answer)
    missing_retry_after: int = 0  # 503s without a Retry-After header
    peak_in_flight: int = 0
    sent: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # requests with no answer, by exception


async def run_open_loop(
    host: str, port: int, requests: list[bytes], rate: float, seconds: float, seed: int = 0, timeout: float = 120.0
) -> OpenLoopResult:
    """Poisson arrivals of ``requests`` (cycled) at ``rate`` per second for ``seconds``, each on an idle keep-alive
    connection or a new one: latency runs from the moment a request was due, so a slow server cannot slow the
    generator down and hide its own queueing (no coordinated omission)."""
    import random

    rng = random.Random(seed)
    result = OpenLoopResult()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # newest last
    in_flight = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        result.peak_in_flight = max(result.peak_in_flight, in_flight)
        close, writer = True, None
        try:
            while idle and time.perf_counter() - idle[-1][2] > IDLE_S:  # the server may have closed it by now
                idle.pop()[1].close()
            reader, writer, _ = idle.pop() if idle else (*await asyncio.open_connection(host, port), 0.0)
            writer.write(request)
            status, _, close, headers = await asyncio.wait_for(_read_response(reader), timeout)
            if status == 503 and "retry-after" not in headers:
                result.missing_retry_after += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            status = 0
            result.failures[type(e).__name__] = result.failures.get(type(e).__name__, 0) + 1
        result.latencies_s.setdefault(status, []).append(time.perf_counter() - due)
        in_flight -= 1
        if writer is not None:
            if close:
                writer.close()
            else:
                idle.append((reader, writer, time.perf_counter()))

    running: set[asyncio.Task] = set()
    start = due = time.perf_counter()
    while due - start < seconds:
        due += rng.expovariate(rate)
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        job = asyncio.create_task(one(requests[result.sent % len(requests)], due))
        running.add(job)
        job.add_done_callback(running.discard)
        result.sent += 1
    await asyncio.gather(*running)
    for _, writer, _ in idle:
        writer.close()
    return result
