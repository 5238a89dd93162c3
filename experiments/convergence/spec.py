"""What one training run is (RunSpec) and what it returns (a plain dict, JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    """One training run: a task, an optimizer configuration (``optimizers.CONFIGS``) at one lr,
    one seed, evaluated on one split."""

    task: str
    optimizer: str
    lr: float
    seed: int
    steps: int
    split: str  # "val" (lr selection) or "test" (final runs)
    phase: str = "grid"  # coarse | grid (lr selection, validation) | final (test)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def execute(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec`` in this process (one thread) and return its record."""
    import time

    import torch

    from .tasks import get_task

    torch.set_num_threads(1)
    task = get_task(spec.task)
    start = time.perf_counter()
    result = task.run(spec)
    result["wall_s"] = round(time.perf_counter() - start, 3)
    result["spec"] = spec.as_dict()
    return result
