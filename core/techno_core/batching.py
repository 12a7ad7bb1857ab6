"""Coalescing batcher: callers submit one item each and await its result; items that arrive while a batch is
being flushed form the next batch.

This is group commit. Under load many items share one flush (one RPC, one transaction); when idle an item is
flushed at once, with no timer adding latency. Written here rather than taken from a library because it must
be asyncio-native, bounded and tiny; the gate uses it for audit writes and the memory service for commits.

Context: each flush runs in the contextvars context of the first item of its batch (so its spans and log lines
belong to a real request's trace), never in a context left over from an earlier request.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

FlushFunction = Callable[[Sequence[Item]], Coroutine[Any, Any, Sequence[Result]]]
_Entry = tuple[Item, "asyncio.Future[Result]", contextvars.Context]


class BatcherClosed(RuntimeError):
    """The batcher was closed; the item was not flushed."""


class CoalescingBatcher(Generic[Item, Result]):
    """``flush`` receives up to ``max_batch`` items and returns one result per item, in order. If it raises, every
    item of that batch fails with the same exception. At most one flush runs at a time."""

    def __init__(self, flush: FlushFunction[Item, Result], *, max_batch: int = 512) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[_Entry[Item, Result]] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        (future,) = self._enqueue((item,))
        return await future

    async def submit_many(self, items: Sequence[Item]) -> list[Result]:
        """``submit`` of each item, in order, as one call: the items join the same batch (or consecutive ones,
        past ``max_batch``), without a task per item as ``gather`` of ``submit`` calls would make."""
        if not items:
            return []
        return list(await asyncio.gather(*self._enqueue(items)))

    def _enqueue(self, items: Sequence[Item]) -> list[asyncio.Future[Result]]:
        if self._closed:
            raise BatcherClosed("batcher is closed")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            # An empty context: the worker outlives the request that happened to start it.
            self._worker = loop.create_task(self._run(), name="coalescing-batcher", context=contextvars.Context())
        context = contextvars.copy_context()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in items]
        self._pending += zip(items, futures, [context] * len(items), strict=True)
        self._wakeup.set()
        return futures

    async def close(self) -> None:
        """Flush what is pending, then stop. Later submits raise ``BatcherClosed``."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._flush_batch(batch)
            if self._closed:
                return

    async def _flush_batch(self, batch: list[_Entry[Item, Result]]) -> None:
        items = [item for item, _, _ in batch]
        first_context = batch[0][2]
        try:
            results = await asyncio.get_running_loop().create_task(self._flush(items), context=first_context)
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except Exception as error:  # every waiter of the batch learns why it failed
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
