"""Timing for the benchmarks: torch.utils.benchmark on a CPU, triton.testing.do_bench on a GPU
(device time from CUDA events, with its own cache flush between calls). Peers take turns for a
few rounds, so the drift of a shared machine falls on all of them and shows in the per-round
ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils import benchmark


@dataclass
class Timing:
    """Seconds per call: the median over every sample of every round, the interquartile range,
    and each round's median (for per-round ratios between peers)."""

    median: float
    iqr: float
    rounds: list[float]


def _cpu_round(step: Callable[[], object], min_run_time: float) -> list[float]:
    timer = benchmark.Timer(stmt="step()", globals={"step": step},
                            num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return list(measurement.times)


def _gpu_round(step: Callable[[], object], min_run_time: float) -> list[float]:
    from triton.testing import do_bench

    quantiles = do_bench(step, warmup=25, rep=max(1, int(min_run_time * 1e3)),
                         quantiles=[0.25, 0.5, 0.75])
    return [q * 1e-3 for q in quantiles]  # the quartiles stand for the round's samples


def time_peers(builders: dict[str, Callable[[], Callable[[], object]]], device: torch.device,
               rounds: int, min_run_time: float, interleave: bool = True) -> dict[str, Timing]:
    """Each builder makes its step; every step is called twice (state, compilation: a compiled
    step has a graph per history slot), then timed for `rounds` rounds. Interleaved, the peers
    take turns each round and all live at once; otherwise (cases too large for every peer's
    tensors at once) each peer is built, timed for all its rounds and freed in turn."""
    one_round = _gpu_round if device.type == "cuda" else _cpu_round
    samples: dict[str, list[list[float]]] = {name: [] for name in builders}

    def ready(build):
        step = build()
        step()
        step()
        return step

    if interleave:
        steps = {name: ready(build) for name, build in builders.items()}
        for _ in range(rounds):
            for name, step in steps.items():
                samples[name].append(one_round(step, min_run_time))
        del steps
    else:
        for name, build in builders.items():
            step = ready(build)
            samples[name] = [one_round(step, min_run_time) for _ in range(rounds)]
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    timings = {}
    for name, per_round in samples.items():
        pooled = sorted(t for times in per_round for t in times)
        quartiles = statistics.quantiles(pooled, n=4) if len(pooled) > 1 else pooled * 3
        timings[name] = Timing(statistics.median(pooled), quartiles[2] - quartiles[0],
                               [statistics.median(times) for times in per_round])
    return timings


def ratio(top: Timing, bottom: Timing) -> dict[str, float]:
    """top / bottom per round: the median with the smallest and largest."""
    ratios = [a / b for a, b in zip(top.rounds, bottom.rounds)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
