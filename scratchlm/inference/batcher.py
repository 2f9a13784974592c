"""One thread owns the model; HTTP requests queue up for it and run together as batches.

A web server handles many requests at once, but a model on one device should run one forward at a time
(concurrent forwards would fight over the same cores and memory, and be slower in total). So every request
becomes a job on a queue. The worker thread takes the first waiting job plus any others already waiting (up to
`max_batch` sequences), runs them as one batch through `Engine.steps`, and after every step hands each job the
tokens it got. Requests that arrive mid-batch wait for the next batch: simpler, but a newcomer's time to first
token then grows with the longest reply already running. continuous.py (the server's default) admits requests at
every step instead; this one stays for comparison (`scratchlm serve --batching static`).

One bad request must never fail the others that happen to share its batch: each job is checked
(`Engine.check`: prompt and sampling settings) before it joins a batch, and the batch runs with
`isolate=True`, so a row whose sampling still raises fails only its own request. Only an exception that
every row shares (the forward pass itself) fails the whole batch; the worker carries on either way.

The asyncio side (FastAPI handlers) receives results through an `asyncio.Queue` per job, filled with
`loop.call_soon_threadsafe`, the one safe way to hand data from a thread to an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .engine import Engine, Sequence

log = logging.getLogger("scratchlm")


@dataclass
class _Job:
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    seqs: list[Sequence] = field(default_factory=list)  # a generation job
    call: Callable[[], Any] | None = None  # or any other model work (scoring), run alone


class BatchWorker:
    """submit(seqs) -> asyncio.Queue of ("events", i, events, finish_reason) / ("error", exc) / ("end",)."""

    def __init__(self, engine: Engine, max_batch: int = 8):
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._held: _Job | None = None  # a job taken while filling a batch that did not fit
        self._thread = threading.Thread(target=self._run, name="scratchlm-generate", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- asyncio side
    def submit(self, seqs: list[Sequence]) -> asyncio.Queue:
        job = _Job(asyncio.get_running_loop(), asyncio.Queue(), seqs=seqs)
        self._q.put(job)
        return job.out

    async def run_call(self, fn: Callable[[], Any]) -> Any:
        """Run fn() on the model thread (in queue order) and return its result."""
        job = _Job(asyncio.get_running_loop(), asyncio.Queue(), call=fn)
        self._q.put(job)
        kind, value = await job.out.get()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        self._q.put(None)

    # ---------------------------------------------------------------- worker thread
    def _send(self, job: _Job, item: tuple) -> None:
        try:
            job.loop.call_soon_threadsafe(job.out.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    def _next_job(self) -> _Job | None:
        if self._held is not None:
            job, self._held = self._held, None
            return job
        return self._q.get()

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            if job.call is not None:
                try:
                    self._send(job, ("result", job.call()))
                except Exception as e:  # noqa: BLE001 - reported to the request, the worker survives
                    self._send(job, ("error", e))
                continue
            batch = [job]
            n = len(job.seqs)
            while n < self.max_batch:  # take whatever else is already waiting
                try:
                    more = self._q.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # shutting down: finish this batch first
                    self._q.put(None)
                    break
                if more.call is not None or n + len(more.seqs) > self.max_batch:
                    self._held = more  # runs next, before anything newer
                    break
                batch.append(more)
                n += len(more.seqs)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        admitted = []
        for job in batch:  # a job that cannot run is answered alone, before it can disturb the batch
            try:
                for s in job.seqs:
                    self.engine.check(s)
            except Exception as e:  # noqa: BLE001
                self._send(job, ("error", e))
            else:
                admitted.append(job)
        batch = admitted
        if not batch:
            return
        seqs = [s for job in batch for s in job.seqs]
        reported = {id(s): False for s in seqs}
        failed: set[int] = set()  # id() of jobs answered with an error
        try:
            for _ in self.engine.steps(seqs, isolate=True):
                for job in batch:
                    if id(job) in failed:
                        continue
                    for i, s in enumerate(job.seqs):
                        if reported[id(s)]:
                            continue
                        if s.error is not None:  # one row of this request failed: so did the request
                            log.error("generation failed for one request", exc_info=s.error)
                            self._send(job, ("error", s.error))
                            failed.add(id(job))
                            for other in job.seqs:  # its other rows (n > 1) stop at the next step
                                other.cancelled = True
                            break
                        events = s.drain()
                        if events or s.done:
                            self._send(job, ("events", i, events, s.finish_reason))
                        reported[id(s)] = s.done
                # a batch whose every request was cancelled (clients gone) can stop early
                if all(s.done or s.cancelled for s in seqs) and any(s.cancelled for s in seqs):
                    for s in seqs:
                        s.finish_reason = s.finish_reason or "abort"
                    break
        except Exception as e:  # noqa: BLE001 - the forward pass failed: every row shares it
            log.exception("generation failed")
            for job in batch:
                if id(job) not in failed:
                    self._send(job, ("error", e))
            return
        for job in batch:
            if id(job) not in failed:
                self._send(job, ("end",))
