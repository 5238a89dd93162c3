"""Task registry: one small task per category of the paper."""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

from ..spec import RunSpec


class Task(Protocol):
    name: str
    category: str  # the paper's category this task stands in for
    metric_name: str
    higher_is_better: bool
    steps_full: int
    steps_quick: int

    def run(self, spec: RunSpec) -> dict[str, Any]: ...


TASK_NAMES: tuple[str, ...] = (
    "digits_cnn", "ctr_fair", "lstm_seq", "ctr_widedeep", "gan2d", "keypoints", "insteval"
)


@cache
def get_task(name: str) -> Task:
    """The task object for ``name`` (imported lazily; cached per process)."""
    from importlib import import_module

    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; choose from {TASK_NAMES}")
    return import_module(f"{__name__}.{name}").TASK
