"""What only the CUDA kernel of tmsgd_kernels::tmsgd_step has, on the GPU: counts on two devices
refused, CUDA graph capture, 64-bit indexing and the grid sized from the compiled kernels'
occupancy. The contract itself, in both count modes (cuda-host: counts on the CPU, the host
decides everything count-dependent; cuda-device: counts on the GPU, read by the kernels), is
tests/test_kernel_contract.py.

Skipped where no GPU (or no CUDA build of the extension) exists.
"""

from __future__ import annotations

import pytest
import torch
from kernel_contract import (
    BY_NAME,
    LIST_NAMES,
    ODD_SHAPES,
    Run,
    assert_bitwise_equal,
    random_params,
)

from tmsgd_kernels import native_extension
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients
from tmsgd_kernels.step_contract import StepScalars

HOST, DEVICE_COUNTS = BY_NAME["cuda-host"], BY_NAME["cuda-device"]
CUDA_MODES = [pytest.param(i, id=i.name) for i in (HOST, DEVICE_COUNTS)]
pytestmark = pytest.mark.skipif(HOST.reason() is not None, reason=f"cuda: {HOST.reason()}")
CUDA = torch.device("cuda")
OPTIONS = dict(momentum=0.9, weight_decay=1e-2, nesterov=True)


def test_counts_on_two_devices_raise_before_any_change():
    run = Run(DEVICE_COUNTS, random_params([(5,), (3, 4)], torch.float32, CUDA))
    run.steps[1] = run.steps[1].cpu()
    before = run.snapshot()
    with pytest.raises(RuntimeError, match=r"steps\[1\] is on cpu"):
        run.call(run.grads())
    run.assert_unchanged(before)


def test_cuda_graph_capture_matches_eager():
    """Device mode reads the counts, lr, grad_scale and found_inf on the GPU: a captured step
    replays as the eager one."""
    lr = torch.tensor(0.05, device=CUDA)

    def make() -> Run:
        return Run(DEVICE_COUNTS, random_params(ODD_SHAPES, torch.float32, CUDA), lr=lr,
                   **OPTIONS)

    eager, graphed, scratch = make(), make(), make()
    scale = torch.tensor(2.0, device=CUDA)
    inf = torch.zeros((), device=CUDA)
    static_grads = [torch.zeros_like(p) for p in graphed.params]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, on a scratch run
        scratch.call(static_grads, grad_scale=scale, found_inf=inf)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.call(static_grads, grad_scale=scale, found_inf=inf)
    assert all(graphed.count(i) == 0 for i in range(len(ODD_SHAPES)))  # capture runs nothing
    for k in range(6):
        inf.fill_(float(k == 2))
        grads = eager.step(grad_scale=scale, found_inf=inf.clone())
        for static, g in zip(static_grads, grads):
            static.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    assert_bitwise_equal(graphed, eager, "graphed and eager")
    assert graphed.count(0) == 5


@pytest.mark.parametrize("implementation", CUDA_MODES)
def test_64_bit_indexing(implementation):
    """A tensor of more than 2^31 elements (bf16, ~4.3 GB each for W, g and both slots)."""
    numel = (1 << 31) + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * (1 << 30):
        pytest.skip("needs about 20 GB of free GPU memory")
    w = torch.ones(numel, dtype=torch.bfloat16, device=CUDA)
    g = torch.full((numel,), 0.5, dtype=torch.bfloat16, device=CUDA)
    even, odd = torch.zeros_like(w), torch.zeros_like(w)
    step = torch.zeros((), dtype=torch.int64, device=implementation.counts_device)
    scalars = StepScalars.make(0.5, *delta_coefficients(PAPER_COEFFICIENTS))
    lists = dict(params=[w], grads=[g], delta_even=[even], delta_odd=[odd], steps=[step])
    implementation.call(*(lists.get(name, []) for name in LIST_NAMES), scalars)
    # First step, zero history: d_new = -lr * g = -0.25 everywhere, W = 0.75 (exact in bf16).
    for piece in (w[:4099], w[(1 << 31) - 5:], w[-4099:]):
        assert torch.all(piece == 0.75)
    assert torch.all(even[-4099:] == -0.25) and torch.all(odd[-4099:] == 0)
    assert int(step) == 1


DTYPE_NAMES = ["float32", "float64", "float16", "bfloat16"]


def test_grid_follows_the_compiled_kernels_occupancy():
    """What the runtime says of each compiled step kernel, which launch_step sizes its grid with:
    no spilled local memory, and as many resident blocks of 256 threads as the registers allow
    (the 8 per SM the grid once assumed fit only below 33 registers)."""
    properties = torch.cuda.get_device_properties(CUDA)
    registers_per_sm = getattr(properties, "regs_per_multiprocessor", 65536)
    blocks_by_threads = properties.max_threads_per_multi_processor // 256
    resident = {}
    for param in DTYPE_NAMES:
        for history in DTYPE_NAMES:
            for momentum in (False, True):
                registers, local, blocks = native_extension._C.cuda_kernel_resources(
                    param, history, momentum)
                assert local <= 8, (param, history, momentum, local)  # see the build test
                rounded = -(-registers // 8) * 8
                assert blocks == min(blocks_by_threads, registers_per_sm // (256 * rounded))
                resident[param, history, momentum] = blocks
    if torch.cuda.get_device_capability(CUDA) == (9, 0):  # the numbers in cuda_kernel.cu
        assert resident["float32", "float32", False] == 6
        assert resident["float32", "float32", True] == 4
