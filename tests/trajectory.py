"""Run the optimizer TMSGD and the oracle side by side on the same gradients, and check them per
step (the optimizer-level counterpart of tests/kernel_contract.py, which calls the kernels)."""

from __future__ import annotations

import torch
from kernel_contract import ODD_SHAPES
from oracle import OracleParam, Tolerance, assert_close, oracle_step

from tmsgd_kernels import TMSGD

# ODD_SHAPES, Tolerance and assert_close are imported from here by optimizer-level tests.
__all__ = ["ODD_SHAPES", "Tolerance", "assert_close", "make_grads", "make_params",
           "run_against_oracle"]


def _randn(shape, generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def make_params(shapes, dtype, device, seed=0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(_randn(s, generator).to(dtype).to(device)) for s in shapes
    ]


def make_grads(params, steps, seed=1, scale=1.0) -> list[list[torch.Tensor]]:
    """Gradients fixed in advance, so both sides see exactly the same sequence."""
    generator = torch.Generator().manual_seed(seed)
    return [
        [(_randn(p.shape, generator) * scale).to(p.dtype).to(p.device) for p in params]
        for _ in range(steps)
    ]


def run_against_oracle(
    *, backend: str, dtype: torch.dtype, device, steps: int = 40, shapes=ODD_SHAPES,
    history_dtype=None, skip_steps=(), grad_scale: float | None = None, lr=0.05, **options
) -> None:
    """Step TMSGD and the oracle `steps` times; compare params and all state after each step."""
    params = make_params(shapes, dtype, device)
    grads = make_grads(params, steps, scale=grad_scale or 1.0)
    oracle = [OracleParam(p) for p in params]
    lr_value = float(lr)
    # In-kernel unscaling and skipping (grad_scale / found_inf) is what capturable=True opts in.
    capturable = grad_scale is not None or bool(skip_steps)
    optimizer = TMSGD(params, lr=lr, backend=backend, history_dtype=history_dtype,
                      capturable=capturable, **options)
    tolerance = Tolerance(dtype, history_dtype or dtype, options.get("momentum", 0.0),
                          options.get("weight_decay", 0.0))
    for k in range(steps):
        skipped = k in skip_steps
        for p, g in zip(params, grads[k]):
            p.grad = g.clone()
        if grad_scale is not None or skipped:
            scale = None if grad_scale is None else torch.tensor(grad_scale, device=device)
            optimizer.grad_scale = scale
            optimizer.found_inf = torch.tensor(1.0 if skipped else 0.0, device=device)
        optimizer.step()
        for o, g in zip(oracle, grads[k]):
            oracle_step(o, g, lr=lr_value, grad_scale=grad_scale, found_inf=skipped, **options)
        tolerance.observe(oracle)
        state = optimizer.state_dict()["state"]
        done = sum(1 for j in range(k + 1) if j not in skip_steps)
        for i, (p, o) in enumerate(zip(params, oracle)):
            where = f"step {k}, param {i} {tuple(p.shape)}"
            assert_close(p, o.weight, tolerance.weight(done), f"{where} weight")
            if i not in state:
                assert done == 0, f"{where}: no state after a step"
                continue
            assert int(state[i]["step"]) == done == o.step, f"{where} step count"
            # Step k wrote slot k % 2: after `done` steps d1 is in slot (done - 1) % 2.
            d1, d2 = ((state[i]["delta_odd"], state[i]["delta_even"]) if done % 2 == 0
                      else (state[i]["delta_even"], state[i]["delta_odd"]))
            assert_close(d1, o.d1, tolerance.history(), f"{where} d1")
            assert_close(d2, o.d2, tolerance.history(), f"{where} d2")
            if options.get("momentum", 0.0):
                # Before the first real step the buffer is unused (step 0 sets buf = g): zeros.
                expected = o.momentum_buffer
                if expected is None:
                    expected = torch.zeros_like(state[i]["momentum_buffer"])
                assert_close(state[i]["momentum_buffer"], expected, tolerance.buffer(done),
                             f"{where} momentum_buffer")
