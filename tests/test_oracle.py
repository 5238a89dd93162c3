"""The optimizer TMSGD against the float64 paper-form oracle, per step, params and all state as
state_dict reports them, for every backend: each option, the history dtype, a tensor lr and
GradScaler's tensors reach the kernels through the optimizer. The kernels themselves, over every
dtype pair and option set, are tests/test_kernel_contract.py."""

from __future__ import annotations

import pytest
import torch
from trajectory import run_against_oracle

OPTIONS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "momentum_dampening": {"momentum": 0.8, "dampening": 0.3},
    "nesterov": {"momentum": 0.9, "nesterov": True},
    "weight_decay_maximize": {"weight_decay": 0.1, "maximize": True},
    "warm_up": {"switch_step": 5},
    "warm_up_momentum": {"switch_step": 3, "momentum": 0.5, "weight_decay": 0.01},
    "heavy_ball_coefficients": {"coefficients": (1.6, -0.6, 0.0)},
    "other_coefficients": {"coefficients": (1.25, -0.5, 0.25)},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_reaches_the_kernels(backend, device, options):
    run_against_oracle(backend=backend, dtype=torch.float32, device=device, **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_bf16_history_matches_oracle(backend, device, dtype):
    run_against_oracle(backend=backend, dtype=dtype, device=device,
                       history_dtype=torch.bfloat16, momentum=0.5)


def test_tensor_lr_matches_oracle(backend, device):
    run_against_oracle(backend=backend, dtype=torch.float32, device=device,
                       lr=torch.tensor(0.05, device=device), momentum=0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_grad_scale_and_found_inf_match_oracle(backend, device, dtype):
    """Scaled grads are unscaled in the step; steps flagged found_inf (the first one included)
    change nothing, and the step count does not advance."""
    run_against_oracle(backend=backend, dtype=dtype, device=device, steps=12, grad_scale=64.0,
                       skip_steps=(0, 1, 5), momentum=0.9)
