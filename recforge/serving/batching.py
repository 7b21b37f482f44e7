"""Dynamic batching: concurrent ``/predict`` requests merged into one model call.

A request waits at most ``max_wait_ms`` (counted from the oldest waiting request) for others
to join it, and a call takes at most ``max_batch_size`` rows (requests are never split). One
model call runs at a time, on one thread; while it runs, new requests queue up and form the
next call. Requests whose tables have the same schema are concatenated into one
``Predictor.predict`` call and the outputs split back in order; a call that fails is retried
request by request, so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa

from recforge.predictor import Predictor
from recforge.serving.model import ServedModel
from recforge.serving.rows import PredictRequest

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass
class BatchStats:
    """Counters of the batcher, shown by ``/metadata``.

    Attributes:
        requests: requests answered (with predictions or an error).
        rows: rows scored.
        model_calls: ``Predictor.predict`` calls, retries of failed merges included.
        merged_calls: calls that served more than one request.
        largest_call_rows: the most rows one call scored.
        largest_call_requests: the most requests one call served.

    """

    requests: int = 0
    rows: int = 0
    model_calls: int = 0
    merged_calls: int = 0
    largest_call_rows: int = 0
    largest_call_requests: int = 0

    def count_call(self, requests: int, rows: int) -> None:
        """Records one model call over ``requests`` requests holding ``rows`` rows."""
        self.model_calls += 1
        self.merged_calls += requests > 1
        self.largest_call_rows = max(self.largest_call_rows, rows)
        self.largest_call_requests = max(self.largest_call_requests, requests)


@dataclass
class _Waiting:
    request: PredictRequest
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Queues requests and scores them in merged model calls on one model thread.

    Args:
        model: the served model (its current predictor is read at each call, so a reload
            takes effect from the next call).
        max_batch_size: the most rows one model call takes.
        max_wait_ms: how long the oldest waiting request may wait for others to join.

    """

    def __init__(self, model: ServedModel, max_batch_size: int, max_wait_ms: float) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatchStats()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._waiting_rows = 0
        self._arrived: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None

    async def start(self) -> None:
        """Starts the batching loop on the running event loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="recforge-model")
        self._task = asyncio.create_task(self._run_forever(), name="recforge-batcher")

    async def stop(self) -> None:
        """Stops the loop; requests still waiting get an error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def predict(self, request: PredictRequest) -> Outputs:
        """Scores one request, merged with others that arrive meanwhile.

        Returns:
            ``{output: numpy array [rows, ...]}`` for the request's outputs, in row order.

        Raises:
            RecforgeError: the model cannot parse the request's values (names the row).
            RuntimeError: the batcher is not running.

        """
        if self._task is None or self._task.done() or self._arrived is None:
            raise RuntimeError("the batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, future))
        self._waiting_rows += request.num_rows
        self._arrived.set()
        return await future

    async def _run_forever(self) -> None:
        assert self._arrived is not None
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._waiting[0].arrived + self.max_wait_s
            while self._waiting_rows < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            try:
                await self._score(batch)
            except Exception as error:  # a bug: answer 500, keep serving the next requests
                logger.exception("serve: batch of %d requests failed", len(batch))
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(error)

    def _take(self) -> list[_Waiting]:
        """The oldest requests that fit in one call (at least one)."""
        batch = [self._waiting.popleft()]
        rows = batch[0].request.num_rows
        while self._waiting and rows + self._waiting[0].request.num_rows <= self.max_batch_size:
            batch.append(self._waiting.popleft())
            rows += batch[-1].request.num_rows
        self._waiting_rows -= rows
        return batch

    async def _score(self, batch: list[_Waiting]) -> None:
        predictor = self.model.predictor
        requests = [waiting.request for waiting in batch]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(
            self._executor, score_requests, predictor, requests, self.stats
        )
        for waiting, result in zip(batch, results):
            self.stats.requests += 1
            if waiting.future.done():  # the client went away
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                self.stats.rows += waiting.request.num_rows
                waiting.future.set_result(result)


def score_requests(
    predictor: Predictor, requests: Sequence[PredictRequest], stats: Optional[BatchStats] = None
) -> list[Union[Outputs, Exception]]:
    """Scores requests, one ``predict`` call per group of requests with the same schema.

    A merged call that raises is retried request by request, so each request gets its own
    outputs or its own error (whose row numbers then count from the request's first row).

    Args:
        predictor: the model.
        requests: the requests, in arrival order.
        stats: counters to update (model calls, merges).

    Returns:
        Per request, in order: its outputs or the exception its rows raised.

    """
    stats = stats if stats is not None else BatchStats()
    groups: dict[pa.Schema, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.table.schema, []).append(i)
    results: list[Any] = [None] * len(requests)
    for members in groups.values():
        if len(members) > 1:
            tables = [requests[i].table for i in members]
            rows = sum(t.num_rows for t in tables)
            stats.count_call(len(members), rows)
            try:
                merged = predictor.predict(pa.concat_tables(tables))
            except Exception:  # retried one by one below: the culprit fails alone
                pass
            else:
                start = 0
                for i in members:
                    stop = start + requests[i].num_rows
                    results[i] = {o: merged[o][start:stop] for o in requests[i].outputs}
                    start = stop
                continue
        for i in members:
            stats.count_call(1, requests[i].num_rows)
            try:
                results[i] = predictor.predict(requests[i].table, requests[i].outputs)
            except Exception as error:
                results[i] = error
    return results
