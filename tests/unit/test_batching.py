"""The coalescing batcher: group commit semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from techno_core.batching import BatcherClosed, CoalescingBatcher


async def test_items_arriving_during_a_flush_share_the_next_flush() -> None:
    batches: list[list[int]] = []
    release, first_flush_started = asyncio.Event(), asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            first_flush_started.set()
            await release.wait()
        return [i * 10 for i in items]

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush)
    first = asyncio.create_task(batcher.submit(1))
    await first_flush_started.wait()
    rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert batches == [[1], [2, 3, 4]]


async def test_a_failed_flush_fails_every_item_of_its_batch_only() -> None:
    calls = 0

    async def flush(items: Sequence[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database down")
        return list(items)

    batcher: CoalescingBatcher[str, str] = CoalescingBatcher(flush)
    with pytest.raises(ConnectionError):
        await batcher.submit("a")
    assert await batcher.submit("b") == "b"


async def test_max_batch_bounds_each_flush() -> None:
    sizes: list[int] = []

    async def flush(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush, max_batch=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == list(range(7))
    assert max(sizes) <= 3
    assert sum(sizes) == 7


async def test_close_flushes_pending_then_refuses() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return list(items)

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush)
    pending = asyncio.create_task(batcher.submit(5))
    await asyncio.sleep(0)
    await batcher.close()
    assert await pending == 5
    with pytest.raises(BatcherClosed):
        await batcher.submit(6)


async def test_a_flush_returning_the_wrong_number_of_results_fails_the_batch() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return []

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await batcher.submit(1)


async def test_each_flush_runs_in_the_context_of_its_first_submitter() -> None:
    import contextvars

    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    async def flush(items: Sequence[str]) -> list[str]:
        seen.append(request.get())
        return list(items)

    batcher: CoalescingBatcher[str, str] = CoalescingBatcher(flush)

    async def submit_as(name: str) -> str:
        request.set(name)
        return await batcher.submit(name)

    assert await asyncio.create_task(submit_as("first")) == "first"
    assert await asyncio.create_task(submit_as("second")) == "second"
    assert seen == ["first", "second"]


async def test_submit_many_puts_its_items_in_one_flush_and_answers_in_order() -> None:
    batches: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush)
    assert await batcher.submit_many([3, 1, 2]) == [30, 10, 20]
    assert batches == [[3, 1, 2]]
    assert await batcher.submit_many([]) == []
    assert batches == [[3, 1, 2]]


async def test_submit_many_past_max_batch_spans_flushes_and_fails_when_one_of_them_fails() -> None:
    batches: list[list[int]] = []

    async def flush(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if 4 in items:
            raise ConnectionError("database down")
        return list(items)

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush, max_batch=3)
    with pytest.raises(ConnectionError):
        await batcher.submit_many([1, 2, 3, 4, 5])
    assert batches == [[1, 2, 3], [4, 5]]
    assert await batcher.submit_many([6, 7]) == [6, 7]


async def test_submit_many_after_close_is_refused() -> None:
    async def flush(items: Sequence[int]) -> list[int]:
        return list(items)

    batcher: CoalescingBatcher[int, int] = CoalescingBatcher(flush)
    await batcher.close()
    with pytest.raises(BatcherClosed):
        await batcher.submit_many([1])
