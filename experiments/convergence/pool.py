"""Run many independent jobs in worker processes (one torch thread each), longest first.

One pool of workers serves a whole invocation (``workers(n)``): starting a spawned worker
imports torch, seconds that would otherwise be paid again for every batch of runs.
"""

from __future__ import annotations

import atexit
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

T = TypeVar("T")
_POOLS: dict[int, ProcessPoolExecutor] = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _POOLS:
        ctx = multiprocessing.get_context("spawn")
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
        atexit.register(_POOLS[workers].shutdown)
    return _POOLS[workers]


def run_all(
    fn: Callable[[T], dict[str, Any]],
    jobs: Sequence[T],
    workers: int,
    cost: Callable[[T], float] = lambda _: 1.0,
    label: str = "",
) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes; results keep the jobs' order."""
    order = sorted(range(len(jobs)), key=lambda i: -cost(jobs[i]))
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    start = time.perf_counter()
    if workers <= 1:
        for n, i in enumerate(order, 1):
            results[i] = fn(jobs[i])
            _progress(label, n, len(jobs), start)
        return [r for r in results if r is not None]
    pool = _pool(workers)
    futures = {pool.submit(fn, jobs[i]): i for i in order}
    for n, fut in enumerate(as_completed(futures), 1):
        results[futures[fut]] = fut.result()
        _progress(label, n, len(jobs), start)
    return [r for r in results if r is not None]


def _progress(label: str, done: int, total: int, start: float) -> None:
    if done == total or done % max(1, total // 5) == 0:
        elapsed = time.perf_counter() - start
        print(f"  [{label}] {done}/{total} runs, {elapsed:.0f} s", file=sys.stderr, flush=True)
