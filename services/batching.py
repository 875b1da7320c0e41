"""Adaptive batching: concurrent requests share one model call.

Policy: the model runs as soon as it is free, on everything queued by then (up to ``max_batch_size`` items),
optionally waiting ``max_delay_ms`` for a fuller batch. At concurrency 1 nothing waits; under load batches grow
by themselves. Unlike BentoML's CorkDispatcher it never cancels a queued request to meet a latency target
(that shed requests that could have been served); shedding belongs to an explicit queue budget.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Observer = Callable[[int, float], None]


class AdaptiveBatcher:
    """``await batcher(x)`` with x (k, ...) returns the model's output rows for those k items.

    ``run`` maps (N, ...) -> (N, ...) and executes on one dedicated thread, one batch at a time (the model's own
    thread pool parallelises inside a batch). ``observe(batch_size, seconds)`` is called after each model call.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_delay_ms: float = 0.0,
        observe: Observer | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.observe = observe
        self._queue: deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) > self.max_batch_size:  # callers chunk; one oversize item would otherwise stall the queue
            parts = [x[i : i + self.max_batch_size] for i in range(0, len(x), self.max_batch_size)]
            return np.concatenate(await asyncio.gather(*(self(p) for p in parts)))
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._loop())
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, future))
        self._wake.set()
        return await future

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        taken, size = [], 0
        while self._queue and size + len(self._queue[0][0]) <= self.max_batch_size:
            x, future = self._queue.popleft()
            if future.cancelled():  # the client went away while queued
                continue
            taken.append((x, future))
            size += len(x)
        return taken

    def _queued(self) -> int:
        return sum(len(x) for x, _ in self._queue)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.max_delay > 0:
                deadline = loop.time() + self.max_delay
                while self._queued() < self.max_batch_size and (left := deadline - loop.time()) > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except asyncio.TimeoutError:
                        break
            jobs = self._take()
            if not jobs:
                continue
            batch = jobs[0][0] if len(jobs) == 1 else np.concatenate([x for x, _ in jobs])
            start = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self.run, batch)
            except Exception as e:  # the model failed: every request of this batch learns why
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(e)
                continue
            if self.observe is not None:
                self.observe(len(batch), time.perf_counter() - start)
            offset = 0
            for x, future in jobs:
                if not future.done():
                    future.set_result(out[offset : offset + len(x)])
                offset += len(x)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
