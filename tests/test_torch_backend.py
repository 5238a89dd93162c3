"""What only the `torch` implementation (tmsgd_kernels/torch_step.py) has: `step` picks the host
path for counts on the CPU, and torch.compile traces the device path into one graph for every
step. The contract itself (both paths against the oracle, bit for bit with each other) is
tests/test_kernel_contract.py."""

from __future__ import annotations

import dataclasses

import torch
from kernel_contract import BY_NAME, LIST_NAMES, Run, random_params
from torch._dynamo.testing import CompileCounterWithBackend

from tmsgd_kernels import torch_step


def test_step_takes_the_host_path_for_cpu_counts(monkeypatch):
    taken = []
    monkeypatch.setattr(torch_step, "host_step", lambda *args: taken.append("host"))
    monkeypatch.setattr(torch_step, "device_step", lambda *args: taken.append("device"))
    run = Run(BY_NAME["torch-host"], random_params([(3,)], torch.float32, "cpu"))
    torch_step.step(run.lists([torch.ones(3)]), run.scalars())
    assert taken == ["host"]


def test_compiled_step_matches_oracle_without_recompiles():
    """torch.compile(fullgraph=True) traces the device path: one graph for every step, with
    different counts per param, a tensor lr changed by a schedule and skipped steps."""
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    lists = len(LIST_NAMES)

    def contract_step(*arguments):  # the harness passes the lists one by one
        torch_step.step(arguments[:lists], *arguments[lists:])

    compiled = dataclasses.replace(
        BY_NAME["torch-device"], name="torch-compiled",
        call=torch.compile(contract_step, backend=counter, fullgraph=True))
    lr = torch.tensor(0.05)
    run = Run(compiled, random_params([(), (3,), (257,)], torch.float32, compiled.device),
              counts=[0, 1, 4], lr=lr, momentum=0.9, switch_step=2)
    for k in range(5):
        lr.fill_(0.05 / (k + 1))
        run.step(grad_scale=torch.tensor(64.0), found_inf=torch.tensor(float(k == 2)))
    assert counter.frame_count == 1
