"""The two GPU kernels compute the same arithmetic: the `cuda` and `triton` backends, both without
fused multiply-add (nvcc --fmad=false; Triton enable_fp_fusion=False) and with a correctly rounded
division by grad_scale, in the same order of operations, agree bit for bit on every dtype pair
and option. (Under the interpreter, tests/test_triton_step.py checks Triton against the oracle;
this needs both compiled.) Skipped without a GPU and both backends."""

from __future__ import annotations

import pytest
import torch

from tmsgd_kernels import functional
from tmsgd_kernels.implementations import unavailable_reason

CUDA = torch.device("cuda")
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or any(unavailable_reason(b, CUDA) for b in ("cuda", "triton")),
    reason="needs a GPU with the cuda and triton backends")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPTIONS = {
    "momentum-nesterov-warmup": dict(momentum=0.9, nesterov=True, switch_step=2),
    "dampening-decay-maximize": dict(momentum=0.8, dampening=0.3, weight_decay=0.01,
                                     maximize=True),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("capturable", [False, True], ids=["host-counts", "device-counts"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_and_triton_agree_bitwise(dtype, capturable, options):
    generator = torch.Generator().manual_seed(0)
    shapes = [(1,), (4097,), (40_000,), (3, 7)]
    start = [torch.randn(s, generator=generator).to(dtype).to(CUDA) for s in shapes]
    grads = [[torch.randn(s, generator=generator).to(dtype).to(CUDA) for s in shapes]
             for _ in range(4)]
    for history in DTYPES:
        runs = []
        for backend in ("cuda", "triton"):
            params = [p.clone() for p in start]
            state = functional.init_state(params, options["momentum"], history, capturable)
            for k, step_grads in enumerate(grads):
                functional.tmsgd(params, [g * 3.0 for g in step_grads], state["delta_even"],
                                 state["delta_odd"], state["momentum_buffers"], state["steps"],
                                 lr=torch.tensor(0.05, device=CUDA),
                                 grad_scale=torch.tensor(3.0, device=CUDA),
                                 found_inf=torch.tensor(float(k == 1), device=CUDA),
                                 backend=backend, **options)
            runs.append(params + state["delta_even"] + state["delta_odd"]
                        + state["momentum_buffers"])
        for a, b in zip(*runs):
            assert torch.equal(a, b), (dtype, history)
