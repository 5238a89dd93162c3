"""The README's step-in-backward examples (its section "Stepping inside backward") run as
written, and do what they say: every step taken inside backward, the checkpoint resumed, every
fourth micro-batch applying a step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "README.md"


def examples() -> list[str]:
    """The python blocks of the README's section "Stepping inside backward"."""
    text = DOC.read_text()
    start = text.index("### Stepping inside backward")
    end = text.index("\n## ", start)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def counts(optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes checkpoint.pt

    def run_example(source: str) -> dict:
        namespace: dict = {}
        exec(compile(source, str(DOC), "exec"), namespace)
        return namespace

    return run_example


def test_the_examples_are_there():
    assert len(examples()) == 2


def test_step_in_backward_example(run):
    names = run(examples()[0])
    assert counts(names["optimizer"]) == {20}
    assert counts(names["resumed_optimizer"]) == {20}  # 10 from the checkpoint, 10 more
    assert names["resumed_scheduler"].last_epoch == 20
    assert all(p.grad is None for p in names["resumed"].parameters())


def test_accumulation_example(run):
    names = run(examples()[1])
    assert counts(names["optimizer"]) == {4}
    assert names["scheduler"].last_epoch == 4
    assert names["optimizer"].param_groups[0]["lr"] == 0.05 * 0.5**2
