"""Run a function on N local ranks (gloo, CPU) from a test, with a deadline.

Each rank is a spawned process joined to a process group through a file in the test's own
folder (no port to collide with when pytest-xdist runs tests side by side). A rank's return
value comes back through torch.save; a rank that raises sends its traceback; a rank still
running at the deadline is killed and the test fails with what the others reported.
"""

from __future__ import annotations

import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEADLINE_S = 180  # a run takes 5-20 s here; gloo's own timeout below ends a hung collective


def _rank_main(rank: int, world_size: int, folder: str, worker, args: tuple) -> None:
    out = Path(folder) / f"rank{rank}.pt"
    try:
        torch.set_num_threads(1)  # two ranks share this machine's cores
        dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=60))
        try:
            result = worker(rank, world_size, Path(folder), *args)
        finally:
            dist.destroy_process_group()
        torch.save({"result": result}, out)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, out)
        raise


def run_on_ranks(worker, folder: Path, *args, world_size: int = 2) -> list:
    """`worker(rank, world_size, folder, *args)` on every rank; its return values, by rank."""
    folder.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    processes = [context.Process(target=_rank_main, args=(rank, world_size, str(folder),
                                                          worker, args), daemon=True)
                 for rank in range(world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(DEADLINE_S)
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    outcomes = []
    for rank in range(world_size):
        path = folder / f"rank{rank}.pt"
        outcomes.append(torch.load(path, weights_only=False) if path.exists() else {})
    errors = [f"rank {rank}:\n{o['error']}" for rank, o in enumerate(outcomes) if "error" in o]
    if errors or hung:
        raise AssertionError("\n".join(errors) + (f"\nranks {hung} passed the {DEADLINE_S} s "
                                                  f"deadline" if hung else ""))
    missing = [rank for rank, o in enumerate(outcomes) if "result" not in o]
    if missing:
        codes = [p.exitcode for p in processes]
        raise AssertionError(f"ranks {missing} returned nothing (exit codes {codes})")
    return [o["result"] for o in outcomes]

