"""How the Triton implementation finds its way to the tensors: the layout cache (hit while every
address stays, rebuilt when one moves, bounded), the flat path for flattened buffers, the pointer
table's alignment hint, and tables kept for captured graphs. Every step is checked against the
oracle by the kernel contract's harness (tests/kernel_contract.py)."""

from __future__ import annotations

import pytest
import torch
from kernel_contract import BY_NAME, DEVICE, Run, implementations, random_params

TRITON = implementations(lambda i: i.backend == "triton")
HOST = BY_NAME["triton-host"]
pytestmark = pytest.mark.skipif(HOST.reason() is not None, reason=f"triton: {HOST.reason()}")

SIZES = [5, 300, 1, 206]  # 512 in all: flat, one full block (the unmasked path)


def stats() -> dict[str, int]:
    from tmsgd_kernels.triton_kernels.layout import cache_stats

    return cache_stats()


def changed(before: dict) -> dict:
    after = stats()
    return {k: after[k] - before[k] for k in ("hits", "builds", "tables")}


@pytest.mark.parametrize("implementation", TRITON)
def test_layout_reused_while_tensors_stay_and_rebuilt_when_one_moves(implementation):
    run = Run(implementation, random_params([(n,) for n in SIZES], torch.float32), momentum=0.9)
    grads = [torch.randn(n, device=DEVICE) for n in SIZES]
    before = stats()
    run.step(grads=grads)
    # Host: one lookup per call; device: the same.
    assert changed(before) == {"hits": 0, "builds": 1, "tables": 1}

    before = stats()
    for _ in range(2):  # same tensors, new values: reused
        for g in grads:
            g.normal_()
        run.step(grads=grads)
    assert changed(before) == {"hits": 2, "builds": 0, "tables": 0}

    # A grad replaced by a new tensor (as after zero_grad(set_to_none=True)) moves: a rebuild,
    # and the step must read the new grad, not the old address (the oracle checks).
    grads[1] = torch.randn(SIZES[1], device=DEVICE)
    before = stats()
    run.step(grads=grads)
    assert changed(before)["builds"] == 1

    # So does a param, and a state tensor (load_state_dict replaces them).
    run.params[0] = run.params[0].clone()
    run.delta_odd[2] = run.delta_odd[2].clone()
    before = stats()
    run.step(grads=grads)
    assert changed(before)["builds"] == 1

    # A count that moves matters only where the kernels read counts through the table.
    run.steps[1] = run.steps[1].clone()
    before = stats()
    run.step(grads=grads)
    assert changed(before)["builds"] == (1 if implementation.counts_on_device else 0)


def flat_run(implementation, sizes=SIZES, momentum=0.9) -> Run:
    """A Run whose every list is views of one flat buffer, as flattened params give."""

    def flat(dtype=torch.float32):
        return list(torch.zeros(sum(sizes), dtype=dtype, device=DEVICE).split(sizes))

    params = flat()
    for p, value in zip(params, random_params([(n,) for n in sizes], torch.float32)):
        p.copy_(value)
    run = Run(implementation, params, momentum=momentum)
    run.delta_even, run.delta_odd = flat(), flat()
    run.momentum_buffers = flat() if momentum else []
    return run


def flat_grads(sizes=SIZES):
    return list(torch.randn(sum(sizes), device=DEVICE).split(sizes))


def test_flattened_buffers_take_the_flat_kernel_without_a_table():
    run = flat_run(HOST)
    grads = flat_grads()
    before = stats()
    for _ in range(3):
        for g in grads:
            g.normal_()
        run.step(grads=grads)
    assert changed(before) == {"hits": 2, "builds": 1, "tables": 0}


def test_flat_buffers_with_empty_tensors_and_momentum_off():
    sizes = [0, 4, 0, 9, 0]
    run = flat_run(HOST, sizes, momentum=0.0)
    before = stats()
    for _ in range(3):
        run.step(grads=flat_grads(sizes))
    assert changed(before)["tables"] == 0


def test_flat_buffers_with_different_counts_step_per_class_through_tables():
    """Flat needs one class of counts: a call with several launches once per class, each class
    a subset of the tensors with a layout of its own."""
    run = flat_run(HOST)
    run.step([0, 1, 2], grads=flat_grads()[:3])
    run.step([1], grads=[torch.randn(SIZES[1], device=DEVICE)])
    before = stats()
    for _ in range(3):
        run.step(grads=flat_grads())
    assert changed(before)["tables"] >= 1


def test_flat_buffers_with_counts_on_device_use_the_table():
    """The host cannot see whether device counts agree (not without a synchronization), so
    every program reads its own tensor's count through the table."""
    run = flat_run(BY_NAME["triton-device"])
    before = stats()
    run.step(grads=flat_grads())
    run.step([0, 2], grads=flat_grads()[0::2])
    run.step(grads=flat_grads())
    assert changed(before)["tables"] >= 1


@pytest.mark.parametrize("implementation", TRITON)
def test_views_that_are_not_back_to_back_use_the_table(implementation):
    storage = torch.randn(400, device=DEVICE)
    params = [storage[0:5], storage[10:310], storage[399:400]]  # gaps between them
    run = Run(implementation, params)
    untouched = storage[5:10].clone()
    before = stats()
    run.step()
    assert changed(before)["tables"] == 1
    assert torch.equal(storage[5:10], untouched), "the gap between params must not be written"


def test_alignment_hint_per_tensor():
    """The table kernel is told a tensor's addresses are 16-byte aligned (so it can vectorize)
    only when every address of that tensor is; a misaligned tensor's blocks go last, in a launch
    of their own, and cost no other tensor its vectors."""
    from tmsgd_kernels.triton_kernels import layout, pointer_table
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

    def table(offset):
        storage = torch.zeros(100, device=DEVICE)
        params = [torch.zeros(8, device=DEVICE), torch.zeros(16, device=DEVICE)]
        grads = [storage[offset:offset + 8], storage[32:48]]
        even, odd, buffers = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        steps = [torch.zeros((), dtype=torch.int64) for _ in params]
        found, _ = layout.lookup(TensorLists(params, grads, even, odd, [], [], buffers, [], steps),
                                 False)
        # Interpreter: one block of 16 per tensor. The block map: (tensor, first element).
        return found.table, found.table.table[pointer_table.ROW * 2:].tolist()

    aligned, block_map = table(0)
    assert (aligned.blocks, aligned.aligned_blocks, block_map) == (2, 2, [0, 0, 1, 0])
    one_off, block_map = table(1)  # grads[0] 4 bytes past alignment
    assert (one_off.blocks, one_off.aligned_blocks, block_map) == (2, 1, [1, 0, 0, 0])


def test_block_map_of_many_blocks():
    """The block map, built by tensor ops, against the loop it replaces: every block of every
    tensor once, aligned tensors first, each in order."""
    from tmsgd_kernels.triton_kernels.pointer_table import _block_map

    numels = torch.tensor([0, 5000, 1, 1024, 1025, 0, 70000])
    aligned = torch.tensor([True, False, True, True, False, True, True])
    block_map, aligned_blocks = _block_map(numels, aligned, 1024)
    expected = []
    for wanted in (True, False):
        for index, (n, a) in enumerate(zip(numels.tolist(), aligned.tolist())):
            if a == wanted:
                expected += [x for start in range(0, n, 1024) for x in (index, start)]
    assert block_map.tolist() == expected
    assert aligned_blocks == 1 + 1 + 69  # tensors 2, 3 and 6


def test_tables_kept_for_graphs_live_as_long_as_their_first_params_memory():
    """What a captured graph reads (its table, the pinned source of the table's copy) is kept
    while the tensor owning the first param's memory lives, and no longer: a view the step
    plan made of a flattened buffer may go, the buffer stays."""
    import gc

    from tmsgd_kernels.triton_kernels import pointer_table

    before = pointer_table.retained()
    buffer = torch.zeros(6)
    view = buffer[2:5]
    kept = [torch.zeros(2), torch.zeros(2)]
    pointer_table._retain(view, *kept)
    pointer_table._retain(buffer, kept[0])  # the same owner: kept once
    assert pointer_table.retained() == before + 2
    del view
    gc.collect()
    assert pointer_table.retained() == before + 2
    del buffer
    gc.collect()
    assert pointer_table.retained() == before


def test_tables_built_during_capture_are_used_but_never_cached(monkeypatch):
    """Capture, simulated on the CPU: a table built then is only filled when a replay runs its
    copy, so the next lookup of the same tensors (an eager step before the first replay) must
    build its own rather than find it; the captured one is kept for the graph."""
    from tmsgd_kernels.triton_kernels import layout, pointer_table
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

    monkeypatch.setattr(pointer_table, "capturing", lambda device: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)  # no GPU, no pinning
    params = [torch.zeros(8, device=DEVICE), torch.zeros(5, device=DEVICE)]
    even, odd, buffers = [[torch.zeros_like(p) for p in params] for _ in range(3)]
    lists = TensorLists(params, [torch.ones_like(p) for p in params], even, odd, [], [], buffers,
                        [], [torch.zeros((), dtype=torch.int64, device=DEVICE) for _ in params])
    kept, before = pointer_table.retained(), stats()
    first, _ = layout.lookup(lists, True)
    second, _ = layout.lookup(lists, True)
    assert first.table.captured and second.table.captured
    assert first.table is not second.table
    assert changed(before) == {"hits": 0, "builds": 2, "tables": 2}
    assert stats()["cached"] == before["cached"]
    # Each capture keeps its table and the table's (pinned) source.
    assert pointer_table.retained() == kept + 4


def test_cache_stays_bounded():
    from tmsgd_kernels.triton_kernels.layout import CACHE_SIZE

    run = Run(HOST, random_params([(3,), (4,)], torch.float32))
    for _ in range(CACHE_SIZE + 3):
        run.step(grads=[torch.randn(3, device=DEVICE), torch.randn(4, device=DEVICE)],
                 check=False)
        run.params[0] = run.params[0].clone()  # a new address: a new layout every step
    assert stats()["cached"] <= CACHE_SIZE
    run.check()


@pytest.mark.parametrize("implementation", TRITON)
def test_grads_in_another_layout_are_copied_and_not_cached(implementation):
    """Copies are new every step: caching their layout would only push others out."""
    from tmsgd_kernels.triton_kernels import layout

    layout._cache.clear()
    run = Run(implementation, random_params([(4, 6)], torch.float32))
    grad = torch.randn(6, 4, device=DEVICE).t()  # column-major, the param row-major
    before = stats()
    for _ in range(3):
        grad.normal_()
        run.step(grads=[grad])
    assert changed(before)["builds"] == 3
    assert stats()["cached"] == 0
