"""The pointer table: built once per layout, reused while the tensors stay put, rebuilt when one
moves; and the flat path for params that lie back to back in one buffer (no table at all)."""

from __future__ import annotations

import pytest
import torch

from tmsgd_kernels.backends import torch_backend, triton_backend, unavailable_reason
from tmsgd_kernels.step_options import StepOptions

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(
    unavailable_reason("triton", DEVICE) is not None,
    reason=f"triton on {DEVICE}: {unavailable_reason('triton', DEVICE)}",
)

SIZES = [5, 300, 1]
OPTIONS = StepOptions(lr=0.05, b1=0.5, b2=-0.5)


def stats() -> dict[str, int]:
    from tmsgd_kernels.triton_kernels.pointer_table import cache_stats

    return cache_stats()


def new_state(total: int):
    return (torch.zeros(2, total, device=DEVICE), None,
            torch.zeros((), dtype=torch.int64, device=DEVICE))


def grads_for(params, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=generator).to(DEVICE) for p in params]


def step_both(params, reference, grads, state, reference_state) -> None:
    triton_backend.step_bucket(params, grads, *state, OPTIONS)
    torch_backend.step_bucket(reference, [g.clone() for g in grads], *reference_state, OPTIONS)
    for a, b in zip(params, reference):
        torch.testing.assert_close(a, b, rtol=4e-7, atol=4e-7)


def test_table_reused_while_tensors_stay_and_rebuilt_when_they_move():
    params = [torch.randn(n, device=DEVICE) for n in SIZES]
    reference = [p.clone() for p in params]
    state, reference_state = new_state(sum(SIZES)), new_state(sum(SIZES))
    grads = grads_for(params, 0)

    before = stats()
    step_both(params, reference, grads, state, reference_state)
    after_first = stats()
    assert after_first["builds"] == before["builds"] + 1

    for seed in (1, 2):  # same tensors, new values: the table is reused
        for g, new in zip(grads, grads_for(params, seed)):
            g.copy_(new)
        step_both(params, reference, grads, state, reference_state)
    reused = stats()
    assert reused["builds"] == after_first["builds"]
    assert reused["hits"] == after_first["hits"] + 2

    # A grad replaced by a new tensor (as after zero_grad(set_to_none=True)) moves: rebuild, and
    # the step must read the new grad, not the old address.
    grads[1] = grads_for(params, 3)[1].clone()
    step_both(params, reference, grads, state, reference_state)
    assert stats()["builds"] == reused["builds"] + 1

    # A param that moves (a new tensor with the same values) rebuilds too.
    params[0] = params[0].clone()
    step_both(params, reference, grads, state, reference_state)
    assert stats()["builds"] == reused["builds"] + 2


def test_back_to_back_params_take_the_flat_kernel_without_a_table():
    total = sum(SIZES)
    flat_params = torch.randn(total, device=DEVICE)
    flat_grads = torch.randn(total, device=DEVICE)
    params = list(flat_params.split(SIZES))
    grads = list(flat_grads.split(SIZES))
    reference = [p.clone() for p in params]
    state, reference_state = new_state(total), new_state(total)
    before = stats()
    for _ in range(3):
        step_both(params, reference, grads, state, reference_state)
    assert stats() == before, "a flat bucket must not build or even look up a pointer table"


def test_views_that_are_not_back_to_back_use_the_table():
    storage = torch.randn(400, device=DEVICE)
    params = [storage[0:5], storage[10:310], storage[399:400]]  # gaps between them
    reference = [p.clone() for p in params]
    grads = grads_for(params, 4)
    state, reference_state = new_state(sum(SIZES)), new_state(sum(SIZES))
    untouched = storage[5:10].clone()
    before = stats()
    step_both(params, reference, grads, state, reference_state)
    assert stats()["builds"] == before["builds"] + 1
    assert torch.equal(storage[5:10], untouched), "the gap between params must not be written"


def test_alignment_hint_only_for_aligned_layouts():
    """The table kernel is told its pointers are 16-byte aligned (so it can vectorize) only when
    every address is and every first column is a multiple of 8 elements."""
    from tmsgd_kernels.triton_kernels.pointer_table import pointer_table

    def table(sizes, offset=0):
        storage = torch.zeros(sum(sizes) + offset + 64, device=DEVICE)
        params = [torch.zeros(n, device=DEVICE) for n in sizes]
        grads = [storage[offset : offset + n] for n in sizes]  # views may be misaligned
        return pointer_table(params, grads, list(sizes), 64)

    assert table([8, 64, 16]).aligned
    assert not table([5, 64, 16]).aligned  # second first column is 5
    assert not table([8, 64, 16], offset=1).aligned  # a grad 4 bytes off alignment
