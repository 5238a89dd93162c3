"""The op's CUDA implementation run on the CPU by the host emulation (tests/cuda_emulation.py),
beyond what the kernel-contract harness checks for it (tests/test_kernel_contract.py runs its
cuda-emulated-host and cuda-emulated-device implementations against the float64 oracle and, bit
for bit, against the CPU kernel): the launches the host code makes (one per table of 60 tensors,
a count launch per 480 counts, grids sized from the multiprocessors), results that do not depend
on the order of the blocks or the size of the grid, scalars on the CPU, the device guard, and the
emulation's own premise, that a kernel whose threads share memory does not compile; and the
8-bit momentum buffer (momentum_dtype=torch.int8) bit for bit against tests/kernel_order_step.py
with blocks in any order, zero blocks, channels_last params and more tensors than one table."""

from __future__ import annotations

import dataclasses
import math
import subprocess
from pathlib import Path

import cuda_emulation
import pytest
import torch
from kernel_contract import (
    BY_NAME,
    KERNEL_ORDER,
    Run,
    assert_bitwise_equal,
    random,
    random_params,
)

pytestmark = pytest.mark.skipif(cuda_emulation.unavailable_reason() is not None,
                                reason=f"host emulation: {cuda_emulation.unavailable_reason()}")

HOST, DEVICE_COUNTS = BY_NAME["cuda-emulated-host"], BY_NAME["cuda-emulated-device"]
MODES = pytest.mark.parametrize("implementation", [HOST, DEVICE_COUNTS], ids=lambda i: i.name)
CPU_KERNEL = BY_NAME["cpu"]
needs_cpu_kernel = pytest.mark.skipif(CPU_KERNEL.reason() is not None,
                                      reason=f"the reference: {CPU_KERNEL.reason()}")

# The launch design (csrc/cuda_table.h, csrc/cuda_step.cpp).
MAX_TENSORS, MAX_COUNTS, CHUNK, THREADS = 60, 480, 16384, 256


def expected_launches(numels: list[int], counts: list[int], counts_on_device: bool,
                      momentum: bool, switch_step: int, multiprocessors: int) -> list[tuple]:
    """(kernel, grid, block) of every launch one call makes, in order. Host mode: the tensors
    grouped by what their count decides (slot, first momentum step, warm-up), groups in the order
    of that key; device mode: one group, then the counts. Each group in tables of up to 60
    non-empty tensors, one step launch each, its grid as many blocks as fit on the device or one
    per chunk when there are fewer."""
    fit = multiprocessors * cuda_emulation.resident_blocks()

    def tables(indices: list[int]) -> list[tuple]:
        tensors = [i for i in indices if numels[i]]
        out = []
        for start in range(0, len(tensors), MAX_TENSORS):
            chunks = sum(math.ceil(numels[i] / CHUNK) for i in tensors[start:start + MAX_TENSORS])
            out.append(("step", min(chunks, fit), THREADS))
        return out

    if counts_on_device:
        n = len(numels)
        return tables(list(range(n))) + [("counts", 1, MAX_COUNTS)] * math.ceil(n / MAX_COUNTS)

    def key(count: int) -> int:
        return count % 2 | int(momentum and count == 0) << 1 | int(count >= switch_step) << 2

    keys = [key(k) for k in counts]
    return [launch for group in sorted(set(keys))
            for launch in tables([i for i, k in enumerate(keys) if k == group])]


def many_sizes() -> list[int]:
    """630 tensor sizes: empty ones, ones of several chunks, and one of 25 chunks that takes a
    table past 80 (the grid limit at 40 multiprocessors)."""
    generator = torch.Generator().manual_seed(22)
    sizes = torch.randint(1, 3000, (630,), generator=generator).tolist()
    sizes[::41] = [0] * len(sizes[::41])
    sizes[5], sizes[70], sizes[130] = 100_000, 400_000, 40_000
    return sizes


@MODES
def test_launches_follow_the_tables(implementation):
    """More tensors than ten tables and than one count table, with mixed counts: the launches are
    the design's, all on the params' device and its current stream, within 4 KB of parameters;
    and the result is the oracle's (Run.step)."""
    sizes = many_sizes()
    run = Run(implementation, random_params([(n,) for n in sizes], torch.float32,
                                            implementation.device),
              counts=[i % 4 for i in range(len(sizes))], momentum=0.9, switch_step=2)
    cuda_emulation.take_launches()
    for _ in range(2):
        counts = [run.count(i) for i in range(len(sizes))]
        with cuda_emulation.configured(multiprocessors=40):
            run.step()
        launches = cuda_emulation.take_launches()
        got = [("counts" if launch.counts else "step", launch.grid[0], launch.block[0])
               for launch in launches]
        assert got == expected_launches(sizes, counts, implementation.counts_on_device,
                                        momentum=True, switch_step=2, multiprocessors=40)
        for launch in launches:
            assert launch.ran and launch.current_stream and launch.device == 0, launch
            assert launch.grid[1:] == (1, 1) and launch.block[1:] == (1, 1), launch
            assert launch.shared == 0 and launch.parameter_bytes <= 4096, launch


@MODES
def test_a_skipped_step_launches_only_in_device_mode(implementation):
    """Host mode reads found_inf and launches nothing; device mode launches as always and the
    kernels return on the device (nothing changes: the harness checks that)."""
    run = Run(implementation, random_params([(70_000,), (5,)], torch.float32,
                                            implementation.device), momentum=0.9)
    cuda_emulation.take_launches()
    run.step(found_inf=torch.ones(()))
    kinds = [launch.counts for launch in cuda_emulation.take_launches()]
    assert kinds == ([False, True] if implementation.counts_on_device else [])


ORDERS = {"reversed": ("reversed", 1), "shuffled": ("shuffled", 7),
          "shuffled-again": ("shuffled", 8)}


@needs_cpu_kernel
@pytest.mark.parametrize("multiprocessors", [1, 132])
@pytest.mark.parametrize("order, seed", ORDERS.values(), ids=ORDERS.keys())
@MODES
def test_blocks_in_any_order_and_any_grid(implementation, order, seed, multiprocessors):
    """No block reads what another writes: blocks run reversed or shuffled, on a grid of two
    blocks striding over every chunk or one block per chunk, give the CPU kernel's bits."""
    shapes = [(100_000,), (16_384,), (16_385,), (3, 7), (0,), (40_000,)]
    options = dict(momentum=0.8, dampening=0.1, nesterov=True, weight_decay=1e-2, switch_step=1)
    emulated, reference = (Run(i, random_params(shapes, torch.float32, i.device), **options)
                           for i in (implementation, CPU_KERNEL))
    for _ in range(3):
        with cuda_emulation.configured(multiprocessors, order, seed):
            grads = emulated.step()
        reference.step(grads=grads)
    assert_bitwise_equal(emulated, reference, f"blocks {order} on {multiprocessors} SMs")


@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@MODES
def test_scalars_on_the_cpu(implementation, dtype):
    """lr, grad_scale and found_inf may be CPU tensors beside CUDA params: read on the host, the
    same bits as the CPU kernel, and a skipped step (found_inf on the CPU) changes nothing."""
    on_cpu = dataclasses.replace(implementation, name=f"{implementation.name}-cpu-scalars",
                                 call=cuda_emulation.contract_call(
                                     implementation.counts_on_device, scalars_on_device=False))
    lr = torch.tensor([0.05], dtype=torch.float64)
    emulated, reference = (Run(i, random_params([(4097,), (3, 5), ()], dtype, i.device), lr=lr,
                               momentum=0.9, maximize=True, switch_step=2)
                           for i in (on_cpu, CPU_KERNEL))
    for k in range(5):
        scale, found_inf = torch.tensor(4.0), torch.tensor(float(k == 1))
        before = emulated.snapshot()
        grads = emulated.step(grad_scale=scale, found_inf=found_inf)
        reference.step(grads=grads, grad_scale=scale, found_inf=found_inf)
        if k == 1:
            emulated.assert_unchanged(before, "a step skipped by a CPU found_inf")
    assert_bitwise_equal(emulated, reference, "scalars on the CPU")


@MODES
def test_params_on_another_device_launch_there(implementation):
    """The CUDA path makes the params' device current (CUDAGuard) and launches on its current
    stream: with params on cuda:1, every launch is on device 1."""
    on_device_1 = dataclasses.replace(implementation, name=f"{implementation.name}-cuda1",
                                      call=cuda_emulation.contract_call(
                                          implementation.counts_on_device, device=1))
    run = Run(on_device_1, random_params([(20_000,), (7,)], torch.float32, torch.device("cpu")),
              momentum=0.9)
    cuda_emulation.take_launches()
    run.step()
    launches = cuda_emulation.take_launches()
    assert launches and all(launch.device == 1 and launch.current_stream for launch in launches)


# ------------------------------------------------------------- 8-bit history and momentum buffer

# Rows with a short last block, of exactly one block, shorter than a block, one long row, one
# element per row, no rows; an all-zero param (below); a channels_last param (below).
INT8_MOMENTUM_SHAPES = [(3, 300), (5, 256), (64, 128), (1, 4097), (7, 1), (0, 300), (4, 300)]
INT8_MOMENTUM_OPTIONS = dict(momentum=0.9, dampening=0.1, nesterov=True, weight_decay=1e-2,
                             switch_step=2)


def int8_momentum_pair(implementation, params, counts, **options) -> tuple[Run, Run]:
    """Runs with 8-bit history and buffers of the emulated kernel and of kernel_order_step (a
    param at count 0 starts with NaN buffer scales, which its first step must not read)."""
    return tuple(Run(i, [p.clone() for p in params], torch.int8, momentum_dtype=torch.int8,
                     counts=counts, **options) for i in (implementation, KERNEL_ORDER))


def step_int8_pair(runs: tuple[Run, Run], grads, indices=None, grad_scale=None,
                   found_inf=None) -> None:
    for run in runs:
        run.step(indices, grads=grads, grad_scale=grad_scale, found_inf=found_inf, check=False)
    assert_bitwise_equal(*runs, "8-bit history and buffers")


@pytest.mark.parametrize("multiprocessors", [1, 132])
@pytest.mark.parametrize("order, seed", [("reversed", 1), ("shuffled", 7)],
                         ids=["reversed", "shuffled"])
@MODES
def test_int8_momentum_blocks_in_any_order(implementation, order, seed, multiprocessors):
    """Both encodings per block (d_new and the new buffer, one warp each, absmax by shuffles)
    give kernel_order_step's codes, scales, params and counts whatever the order of the blocks
    and the size of the grid: counts 0 to 6 in one call (first momentum step, warm-up, both
    slots), an all-zero param (zero blocks: scale 0, codes 0), a channels_last param with a
    non-dense grad, a grad scale and a skipped step."""
    generator = torch.Generator().manual_seed(3)
    params = random_params(INT8_MOMENTUM_SHAPES, torch.float32)
    params[-1].zero_()
    params.append(random((3, 64, 3, 3), torch.float32, generator, torch.device("cpu"))
                  .to(memory_format=torch.channels_last))
    runs = int8_momentum_pair(implementation, params, counts=[0, 1, 2, 3, 4, 5, 6, 0],
                              **INT8_MOMENTUM_OPTIONS)
    for k in range(4):
        grads = runs[0].grads(scale=4.0)
        grads[-2].zero_()
        grads[-1] = random((3, 64, 3, 6), torch.float32, generator, torch.device("cpu"))[..., ::2]
        with cuda_emulation.configured(multiprocessors, order, seed):
            step_int8_pair(runs, grads, grad_scale=torch.tensor(4.0),
                           found_inf=torch.tensor(float(k == 1)))
    zero = INT8_MOMENTUM_SHAPES.index((4, 300))
    assert runs[0].momentum_scales[zero].eq(0).all() and runs[0].momentum_buffers[zero].eq(0).all()
    assert runs[0].momentum_scales[0].gt(0).all(), "a buffer with values has positive scales"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@MODES
def test_int8_momentum_many_tensors_and_16_bit_params(implementation, dtype):
    """More tensors than two tables of the 8-bit kernel (40 each), some without blocks, stepped
    in subsets so that counts differ within calls, 16-bit params, no dampening."""
    generator = torch.Generator().manual_seed(9)
    rows = torch.randint(0, 5, (90,), generator=generator).tolist()
    per_row = torch.randint(1, 700, (90,), generator=generator).tolist()
    params = random_params(list(zip(rows, per_row)), dtype)
    runs = int8_momentum_pair(implementation, params, counts=[i % 3 for i in range(90)],
                              momentum=0.8, switch_step=1)
    for indices in (None, list(range(0, 90, 4)), None):
        step_int8_pair(runs, runs[0].grads(indices), indices)


# What a kernel must not use for a sequential run of its threads to be exact, and a kernel that
# uses none of it.
SHARING = {
    "shared-memory": "__shared__ float s[256]; s[threadIdx.x] = x[0]; x[0] = s[0];",
    "barrier": "x[threadIdx.x] = 1; __syncthreads(); x[0] = x[1];",
    "atomic": "atomicAdd(x, 1.0f);",
    "warp-shuffle": "x[0] = __shfl_sync(0xffffffffu, x[threadIdx.x], 0);",
}


def _compile_kernel(body: str) -> subprocess.CompletedProcess:
    shims = Path(cuda_emulation.ROOT) / "csrc" / "emulation"
    source = f"#include <cuda_runtime.h>\n__global__ void kernel(float* x) {{ {body} }}\n"
    return subprocess.run(["g++", "-std=c++20", "-fsyntax-only", f"-I{shims}", "-x", "c++", "-"],
                          input=source, capture_output=True, text=True)


@pytest.mark.parametrize("body", SHARING.values(), ids=SHARING.keys())
def test_a_kernel_whose_threads_share_memory_does_not_compile(body):
    assert _compile_kernel("x[blockIdx.x * blockDim.x + threadIdx.x] += 1;").returncode == 0
    result = _compile_kernel(body)
    assert result.returncode != 0 and "not declared" in result.stderr, result.stderr
