"""Executors: run one stage function over many tasks, on this machine or on a Ray cluster.

Every pipeline stage is `fn(*args) -> small result` over files (see dedup.py and pipeline.py), so the executor only
has to call it for each task and return the results in task order:

  LocalExecutor(workers)   a process pool on this machine (workers=1 runs in-process: easy to debug and profile)
  RayExecutor(address)     Ray tasks (`pip install "ray[data]"`): the same functions, scheduled by Ray on a local
                           instance or a cluster (`ray start --head` on one machine, `ray start --address=HEAD:6379`
                           on the others, then `--executor ray --ray-address HEAD:6379`). Stage files are read and
                           written by path, so on a cluster --out must be on a filesystem every node mounts (NFS,
                           Lustre, a FUSE-mounted bucket).

`map` runs a stage over a list of tasks; `imap` streams a long iterator of tasks (tokenizer batches) with a bounded
number in flight and yields the results in order, so output is the same file whoever ran each task.
No scheduling logic lives here: the pool or Ray decides where each task runs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, Sequence

from scratchlm.tokenizer.base import default_signals


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _fork():
    """fork where there is one: workers inherit loaded modules and test doubles without pickling or importing."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True, leave=False)


class LocalExecutor:
    """Process pool; results come back in task order."""

    name = "local"

    def __init__(self, workers: int | None = None, progress: bool = True):
        self.workers = workers or default_workers()
        self.progress = progress

    def map(self, fn: Callable, tasks: Sequence[tuple], desc: str = "") -> list:
        bar = _progress(len(tasks), desc, self.progress)
        try:
            if self.workers <= 1 or len(tasks) <= 1:
                out = []
                for t in tasks:
                    out.append(fn(*t))
                    bar and bar.update(1)
                return out
            with ProcessPoolExecutor(min(self.workers, len(tasks)), mp_context=_fork(), initializer=default_signals) as pool:
                futures = [pool.submit(fn, *t) for t in tasks]
                for f in futures:
                    f.result()
                    bar and bar.update(1)
                return [f.result() for f in futures]
        finally:
            bar and bar.close()

    def imap(self, fn: Callable, tasks: Iterable[tuple], window: int | None = None) -> Iterator:
        """fn(*task) for a stream of tasks, results in task order, at most `window` (2 x workers) in flight."""
        if self.workers <= 1:
            for t in tasks:
                yield fn(*t)
            return
        with ProcessPoolExecutor(self.workers, mp_context=_fork(), initializer=default_signals) as pool:
            pending: deque = deque()
            for t in tasks:
                pending.append(pool.submit(fn, *t))
                if len(pending) >= (window or 2 * self.workers):  # bounded memory: wait for the oldest
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray tasks; results come back in task order. Starts a local Ray instance unless given an address."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, progress: bool = True):
        try:
            import ray
        except ImportError:
            raise ValueError('--executor ray needs Ray: pip install "ray[data]" (or scratchlm[ray])') from None
        self.ray = ray
        self.progress = progress
        self._started = False
        if not ray.is_initialized():
            kwargs = {"address": address, "ignore_reinit_error": True, "log_to_driver": False,
                      "include_dashboard": False}
            if address is None:
                kwargs["num_cpus"] = workers or default_workers()
            import signal
            import threading

            previous = signal.getsignal(signal.SIGTERM)
            ray.init(**kwargs)
            if previous is not None and threading.current_thread() is threading.main_thread():  # ray.init puts its own SIGTERM handler (sys.exit) on this process and never
                signal.signal(signal.SIGTERM, previous)  # takes it off: a stop-on-signal run and forks inherit it
            self._started = True
        # the tokenizer's window: as many batches in flight as the cluster has CPUs, twice over
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers or default_workers())))

    def map(self, fn: Callable, tasks: Sequence[tuple], desc: str = "") -> list:
        remote = self.ray.remote(num_cpus=1)(fn)
        refs = [remote.remote(*t) for t in tasks]
        bar = _progress(len(refs), desc, self.progress)
        pending = list(refs)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            bar and bar.update(len(done))
        bar and bar.close()
        return self.ray.get(refs)

    def imap(self, fn: Callable, tasks: Iterable[tuple], window: int | None = None) -> Iterator:
        """fn(*task) as Ray tasks for a stream of tasks, results in task order, at most `window` in flight."""
        remote = self.ray.remote(num_cpus=1)(fn)
        pending: deque = deque()
        for t in tasks:
            pending.append(remote.remote(*t))
            if len(pending) >= (window or 2 * self.workers):
                yield self.ray.get(pending.popleft())
        while pending:
            yield self.ray.get(pending.popleft())

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()


def make_executor(kind: str = "local", workers: int | None = None, ray_address: str | None = None,
                  progress: bool = True):
    if kind == "local":
        return LocalExecutor(workers, progress)
    if kind == "ray":
        return RayExecutor(ray_address, workers, progress)
    raise ValueError(f"unknown executor {kind!r}: use local or ray")
