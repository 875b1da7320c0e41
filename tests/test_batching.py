"""The adaptive batcher: requests are grouped under concurrency, answers go back to the right caller."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from services.batching import AdaptiveBatcher


def make(max_batch_size, delay_ms=0.0, fail=False):
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        time.sleep(0.01)  # a model call takes time: requests pile up meanwhile
        if fail:
            raise RuntimeError("model exploded")
        return x * 2

    return AdaptiveBatcher(run, max_batch_size, delay_ms), calls


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    batcher, calls = make(8)

    async def main():
        xs = [np.full((1, 3), i, np.float32) for i in range(32)]
        return await asyncio.gather(*(batcher(x) for x in xs))

    outs = asyncio.run(main())
    assert [float(o[0, 0]) for o in outs] == [2.0 * i for i in range(32)]
    assert sum(calls) == 32 and max(calls) == 8 and len(calls) < 32
    batcher.close()


def test_single_request_does_not_wait():
    batcher, calls = make(32)
    start = time.perf_counter()
    out = asyncio.run(batcher(np.ones((1, 2), np.float32)))
    assert out.shape == (1, 2) and calls == [1]
    assert time.perf_counter() - start < 0.5
    batcher.close()


def test_batch_size_one_means_no_batching():
    batcher, calls = make(1)

    async def main():
        return await asyncio.gather(*(batcher(np.ones((1, 2), np.float32)) for _ in range(6)))

    asyncio.run(main())
    assert calls == [1] * 6
    batcher.close()


def test_oversize_request_is_chunked():
    batcher, calls = make(4)
    out = asyncio.run(batcher(np.arange(10, dtype=np.float32)[:, None]))
    assert out[:, 0].tolist() == [2.0 * i for i in range(10)]
    assert max(calls) <= 4
    batcher.close()


def test_delay_collects_a_fuller_batch():
    batcher, calls = make(16, delay_ms=50)

    async def main():
        first = asyncio.ensure_future(batcher(np.ones((1, 1), np.float32)))
        await asyncio.sleep(0.005)
        rest = [batcher(np.ones((1, 1), np.float32)) for _ in range(3)]
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert calls == [4]
    batcher.close()


def test_model_failure_reaches_every_caller_of_that_batch():
    batcher, _ = make(8, fail=True)

    async def main():
        return await asyncio.gather(*(batcher(np.ones((1, 1), np.float32)) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    batcher.close()


def test_invalid_size():
    with pytest.raises(ValueError):
        AdaptiveBatcher(lambda x: x, 0)


def test_call_time_model_learns_fixed_and_per_item_cost():
    from services.batching import CallTime

    model = CallTime()
    for b in (1, 2, 4, 8, 16, 32):
        model.add(b, 0.002 + 0.001 * b)
    assert model.predict(10) == pytest.approx(0.012, rel=0.01)
    same = CallTime()
    same.add(4, 0.02)
    assert same.predict(8) == pytest.approx(0.04)  # one batch size seen: proportional


def test_admission_refuses_past_the_budget_and_gives_back_what_it_reserved():
    from services.batching import Overloaded

    batcher = AdaptiveBatcher(lambda x: x, 4, budget_s=0.05)
    batcher.call_time.add(4, 0.02)  # 5 ms an item
    batcher._busy_until = time.perf_counter() + 1e-3  # a call is running; the queue fills meanwhile
    batcher._queue.append(None)  # busy: not the idle model that always admits
    with pytest.raises(Overloaded) as e:
        for _ in range(100):
            batcher.admit()
    assert e.value.retry_after >= 1 and "latency_budget_s" in str(e.value)
    held = batcher._reserved_items
    assert 0 < held < 100
    batcher._queue.clear()
    for _ in range(held):
        batcher.release((1, 1.0))
    assert batcher._reserved_items == 0 and batcher.admit() == (1, 1.0)
    batcher.close()


def test_flow_predicts_the_answer_from_requests_inside_and_their_departure_rate():
    from services.batching import Flow, Overloaded

    flow = Flow(window_s=10.0, min_seen=3)
    flow.enter(1.0)  # no departures seen yet: admitted, however many are inside
    now = time.perf_counter()
    flow._left.extend([now - 0.4, now - 0.3, now - 0.2, now - 0.1])  # 10 departures a second
    flow.in_flight = 5
    assert flow.predicted_s() == pytest.approx(0.6, rel=0.01)
    flow.enter(1.0)  # 6 inside: 0.6 s fits the budget
    flow.in_flight = 20
    with pytest.raises(Overloaded) as e:
        flow.enter(1.0)  # 2.1 s does not
    assert e.value.retry_after >= 1 and flow.in_flight == 20
