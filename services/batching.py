"""Adaptive batching with admission control: concurrent requests share one model call, and a request that could
not start within the latency budget is refused at once instead of waiting for its 504.

Policy: the model runs as soon as it is free, on everything queued by then (up to ``max_batch_size`` items),
optionally waiting ``max_delay_ms`` for a fuller batch. At concurrency 1 nothing waits; under load batches grow
by themselves. Unlike BentoML's CorkDispatcher it never cancels a queued request: shedding happens at admission,
from a prediction of the wait (:class:`CallTime` fitted on the model calls just made), so a request that could
have been served within the budget is never refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Observer = Callable[[int, float], None]


class Overloaded(Exception):
    """The predicted wait passes the latency budget: answer 503 with ``Retry-After: retry_after`` seconds."""

    def __init__(self, wait_s: float, budget_s: float) -> None:
        self.retry_after = max(1, math.ceil(wait_s - budget_s))
        super().__init__(
            f"the service is at capacity: a new request would be answered in about {wait_s:.1f} s, "
            f"past its latency budget of {budget_s:g} s (latency_budget_s); retry in {self.retry_after} s"
        )


class Flow:
    """Requests inside the service and how fast they leave it. By Little's law a new request is answered after
    about ``(in_flight + 1) / departure rate``: that counts every stage (decoding, the model, Grad-CAM, the CPU they
    share), where :meth:`AdaptiveBatcher.predicted_wait` sees only the model's queue."""

    def __init__(self, window_s: float = 2.0, min_seen: int = 8) -> None:
        self.window_s, self.min_seen = window_s, min_seen
        self.in_flight = 0
        self._left: deque[float] = deque()  # perf_counter of recent departures

    def predicted_s(self) -> float:
        now = time.perf_counter()
        while self._left and now - self._left[0] > self.window_s:
            self._left.popleft()
        if len(self._left) < self.min_seen or self._left[-1] <= self._left[0]:
            return 0.0  # too few departures to tell a rate: admit
        rate = (len(self._left) - 1) / (self._left[-1] - self._left[0])
        return (self.in_flight + 1) / rate

    def enter(self, budget_s: float) -> None:
        """Count a request in, or raise :class:`Overloaded` when it would be answered past ``budget_s``."""
        if self.in_flight and (wait := self.predicted_s()) > budget_s:
            raise Overloaded(wait, budget_s)
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self._left.append(time.perf_counter())


class CallTime:
    """Seconds of one model call as ``a + c * cost``, fitted by least squares over recent calls (exponential
    forgetting), so the prediction follows the host's speed and the batch sizes actually seen."""

    def __init__(self, decay: float = 0.97) -> None:
        self.decay = decay
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0

    def add(self, cost: float, seconds: float) -> None:
        d = self.decay
        self.n = self.n * d + 1
        self.sx = self.sx * d + cost
        self.sy = self.sy * d + seconds
        self.sxx = self.sxx * d + cost * cost
        self.sxy = self.sxy * d + cost * seconds

    def predict(self, cost: float) -> float:
        """Predicted seconds of a call of ``cost`` (0 before any call was seen)."""
        if self.n == 0:
            return 0.0
        mx, my = self.sx / self.n, self.sy / self.n
        var = self.sxx / self.n - mx * mx
        if var <= 1e-12 * max(1.0, mx * mx):  # every call had the same cost: proportional
            return my * cost / mx if mx > 0 else my
        slope = max(0.0, (self.sxy / self.n - mx * my) / var)
        return max(0.0, my + slope * (cost - mx))


@dataclass
class _Job:
    payload: Any
    size: int
    cost: float
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


def concat(payloads: Sequence[np.ndarray]) -> np.ndarray:
    return payloads[0] if len(payloads) == 1 else np.concatenate(payloads)


def concat_windows(payloads: Sequence[np.ndarray], pad_id: int) -> np.ndarray:
    """Jobs of (k, 2, L) token windows (ids and attention mask), L differing by length bucket -> (N, 2, max L),
    shorter ones padded (ids with ``pad_id``, mask with 0): one model call for all of them."""
    width = max(p.shape[2] for p in payloads)
    if all(p.shape[2] == width for p in payloads):
        return concat(payloads)
    out = np.zeros((sum(len(p) for p in payloads), 2, width), np.int64)
    out[:, 0] = pad_id
    row = 0
    for p in payloads:
        out[row : row + len(p), :, : p.shape[2]] = p
        row += len(p)
    return out


def slice_rows(out: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    if len(sizes) == 1:
        return [out]
    offsets = [0, *itertools.accumulate(sizes)]  # not numpy: this runs on the event loop, for a handful of ints
    return [out[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]


class AdaptiveBatcher:
    """``await batcher(x)`` with x (k, ...) returns the model's output rows for those k items.

    ``run`` maps a collated batch to its output and executes on one dedicated thread, one call at a time (the
    model's own thread pool parallelises inside a call). ``collate`` joins the jobs' payloads (default:
    concatenation of (k, ...) arrays), ``split`` cuts the output back per job (default: rows). ``observe(size,
    seconds)`` is called after each model call. ``budget_s``: the longest predicted wait a request is admitted
    with; ``max_queue``: the most items waiting (both raise :class:`Overloaded`).
    """

    def __init__(
        self,
        run: Callable[[Any], Any],
        max_batch_size: int,
        max_delay_ms: float = 0.0,
        observe: Observer | None = None,
        *,
        budget_s: float = math.inf,
        max_queue: int = 1_000_000,
        collate: Callable[[list[Any]], Any] = concat,
        split: Callable[[Any, list[int]], list[Any]] = slice_rows,
        on_queue: Callable[[int, float | None], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.observe = observe
        self.budget_s = budget_s
        self.max_queue = max_queue
        self.collate, self.split = collate, split
        self.on_queue = on_queue  # (queued items, wait of a job just taken or None)
        self.call_time = CallTime()
        self.cost_per_item = 1.0  # running mean over model calls
        self._queue: deque[_Job] = deque()
        self._queued_items = 0
        self._queued_cost = 0.0
        self._reserved_items = 0  # requests admitted but not queued yet (still being prepared)
        self._reserved_cost = 0.0
        self._calls = 0
        self._busy_until = 0.0  # perf_counter at which the running call is predicted to end
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def predicted_wait(self, size: int = 1, cost: float | None = None) -> float:
        """Seconds until a new job of ``size`` items (and ``cost``, default: the mean cost of an item so far) would
        have its answer: the running call's rest, then the work queued and reserved ahead of it, in calls of up to
        max_batch_size items."""
        cost = size * self.cost_per_item if cost is None else cost
        items = self._queued_items + self._reserved_items + size
        total = self._queued_cost + self._reserved_cost + cost
        calls = max(1, math.ceil(items / self.max_batch_size))
        running = max(0.0, self._busy_until - time.perf_counter())
        return running + calls * self.call_time.predict(total / calls)

    def admit(self, size: int = 1, cost: float | None = None) -> tuple[int, float]:
        """Reserve room for a request about to be prepared, or raise :class:`Overloaded`. Returns the reservation,
        to pass to ``__call__`` (or to :meth:`release` when the request goes no further)."""
        cost = size * self.cost_per_item if cost is None else cost
        ahead = self._queued_items + self._reserved_items
        busy = ahead > 0 or self._busy_until > time.perf_counter()
        wait = self.predicted_wait(size, cost)
        # with nothing ahead a request is always admitted: however long its call, waiting would not shorten it
        if busy and (wait > self.budget_s or ahead + size > self.max_queue):
            raise Overloaded(wait, self.budget_s)
        self._reserved_items += size
        self._reserved_cost += cost
        return size, cost

    def release(self, reservation: tuple[int, float] | None) -> None:
        if reservation is not None:
            self._reserved_items = max(0, self._reserved_items - reservation[0])
            self._reserved_cost = max(0.0, self._reserved_cost - reservation[1])

    async def __call__(
        self, x: Any, size: int | None = None, cost: float | None = None, reserved: tuple[int, float] | None = None
    ) -> Any:
        """The output for payload ``x`` of ``size`` items (default ``len(x)``); ``cost`` (default: size) feeds the
        call-time model; ``reserved`` is what :meth:`admit` reserved for this request."""
        size = len(x) if size is None else size
        cost = float(size) if cost is None else cost
        self.release(reserved)
        if size > self.max_batch_size:  # callers chunk; one oversize item would otherwise stall the queue
            parts = [x[i : i + self.max_batch_size] for i in range(0, size, self.max_batch_size)]
            outs = await asyncio.gather(*(self(p, cost=cost * len(p) / size) for p in parts))
            return np.concatenate(outs)
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._loop())
        job = _Job(x, size, cost, loop.create_future())
        self._queue.append(job)
        self._queued_items += size
        self._queued_cost += cost
        self._report(None)
        self._wake.set()
        return await job.future

    def _report(self, wait: float | None) -> None:
        if self.on_queue is not None:
            self.on_queue(self._queued_items, wait)

    def _take(self) -> list[_Job]:
        taken, size, now = [], 0, time.perf_counter()
        while self._queue and size + self._queue[0].size <= self.max_batch_size:
            job = self._queue.popleft()
            self._queued_items -= job.size
            self._queued_cost -= job.cost
            if job.future.cancelled():  # the client went away while queued
                continue
            taken.append(job)
            size += job.size
            self._report(now - job.queued_at)
        if not self._queue:
            self._queued_cost = 0.0  # no float drift
        return taken

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.max_delay > 0:
                deadline = loop.time() + self.max_delay
                while self._queued_items < self.max_batch_size and (left := deadline - loop.time()) > 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except asyncio.TimeoutError:
                        break
            jobs = self._take()
            if not jobs:
                continue
            cost = sum(j.cost for j in jobs)
            start = time.perf_counter()
            self._busy_until = start + self.call_time.predict(cost)
            try:
                batch = self.collate([j.payload for j in jobs])
                out = await loop.run_in_executor(self._executor, self.run, batch)
                parts = self.split(out, [j.size for j in jobs])
            except Exception as e:  # the model failed: every request of this batch learns why
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            finally:
                self._busy_until = 0.0
            seconds = time.perf_counter() - start
            self.call_time.add(cost, seconds)
            size = sum(j.size for j in jobs)
            self.cost_per_item = 0.9 * self.cost_per_item + 0.1 * cost / size if self._calls else cost / size
            self._calls += 1
            if self.observe is not None:
                self.observe(size, seconds)
            for job, part in zip(jobs, parts, strict=True):
                if not job.future.done():
                    job.future.set_result(part)

    def close(self) -> None:
        """Stop the worker task (from any thread: a retired model version is closed by the store watcher too)."""
        if (worker := self._worker) is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs it any more
                worker.get_loop().call_soon_threadsafe(worker.cancel)
        self._executor.shutdown(wait=False, cancel_futures=True)
