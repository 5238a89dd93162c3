"""The step benchmarks as a pytest-benchmark suite, grouped by case and configuration:

    pytest bench/ --benchmark-only [-k resnet50] [--benchmark-save=NAME]
    pytest bench/ --benchmark-only --benchmark-compare=NAME     (against a saved baseline)

Same cases (bench/cases.py) and peers (bench/peers.py) as the report (bench/report.py); each
benchmark records its byte count, so GB/s = extra_info bytes / time. On a GPU each call is
followed by torch.cuda.synchronize(), so the time is the step's whole wall time.
"""

from __future__ import annotations

import pytest
import torch
from cases import all_cases
from peers import Config, bytes_per_element, peers_for

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = all_cases(DEVICE.type == "cuda")
CONFIGS = [Config(), Config(momentum=True), Config(history="bf16")]
PEERS = ["tmsgd[cuda]", "tmsgd[triton]", "tmsgd[cpu]", "tmsgd[torch]", "tmsgd[cuda]+flat",
         "tmsgd[triton]+flat", "tmsgd[cpu]+flat", "compile[fallback]", "compile[fair]",
         "sgd[fused]", "sgd[foreach]", "ceiling"]


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.label.replace(", ", "-"))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_step(benchmark, case, config, peer) -> None:
    builders = peers_for(case, DEVICE)
    if peer not in builders:
        pytest.skip(f"{peer} does not apply to {case.name} on {DEVICE.type}")
    if config.history == "bf16" and not peer.startswith(("tmsgd", "compile[fair]")):
        pytest.skip("the history dtype is TM-SGD's alone")
    torch._dynamo.reset()  # a compiled peer recompiles for every case: stay under the limit
    step = builders[peer](case, DEVICE, config)
    if DEVICE.type == "cuda":
        inner = step

        def step() -> None:
            inner()
            torch.cuda.synchronize()
    step()
    step()  # state created, compiled graphs for both history slots
    benchmark.group = f"{case.name} ({config.label})"
    benchmark.extra_info.update(elements=case.stepped_elements, tensors=len(case.shapes),
                                bytes=bytes_per_element(peer, config) * case.stepped_elements)
    benchmark(step)
