"""The CUDA kernel of tmsgd_kernels::tmsgd_step (csrc/) against the float64 oracle on the GPU, in
both count modes: counts on the CPU (host mode: the host decides everything count-dependent) and
counts on the GPU (device mode: the kernels read them; CUDA-graph capturable). The same checks as
tests/test_native_cpu.py, plus host mode against device mode, more tensors than one kernel table,
graph capture and 64-bit indexing.

Skipped where no GPU (or no CUDA build of the extension) exists.
"""

from __future__ import annotations

import pytest
import torch
from oracle import OracleParam, oracle_step
from test_native_cpu import (
    B1,
    B2,
    DTYPES,
    ODD_SHAPES,
    OP,
    OPTIONS,
    Call,
    check_against,
    check_different_counts,
    randn,
    run_against_oracle,
    run_schedule,
)
from trajectory import Tolerance

from tmsgd_kernels import native_extension
from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS


def _unavailable() -> str | None:
    if native_extension.load_error is not None:
        return native_extension.load_error
    if not native_extension.has_kernel("CUDA"):
        return "the extension was built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


REASON = _unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"native cuda kernel: {REASON}")
CUDA = "cuda"
# Where the counts live, by mode.
MODES = {"host": "cpu", "device": CUDA}
mode_ids = pytest.mark.parametrize("counts", MODES.values(), ids=MODES.keys())


def cuda_call(shapes, dtype, history_dtype=None, counts=CUDA, **kwargs) -> Call:
    return Call.of_shapes(shapes, dtype, history_dtype, device=CUDA, counts_device=counts,
                          **kwargs)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@mode_ids
def test_oracle_every_dtype_pair_and_option_set(counts, dtype, options):
    for history_dtype in DTYPES:
        run_against_oracle(cuda_call(ODD_SHAPES, dtype, history_dtype, counts), options)


# lr, grad_scale and found_inf on the GPU (read by the kernel) or on the CPU (read on the host).
SCALARS = {
    "gpu": (lambda: torch.tensor(0.03, device=CUDA), CUDA),
    "gpu-int-lr": (lambda: torch.tensor([1], device=CUDA), CUDA),
    "cpu": (lambda: torch.tensor([0.03], dtype=torch.float64), "cpu"),
}


@pytest.mark.parametrize("make_lr, scalars_device", SCALARS.values(), ids=SCALARS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@mode_ids
def test_oracle_lr_grad_scale_and_skipped_steps(counts, dtype, make_lr, scalars_device):
    lr = make_lr()
    grad_scale = 20.0 if lr.dtype == torch.int64 else 1024.0  # int lr 1: 0.05 effective
    run_against_oracle(cuda_call(ODD_SHAPES, dtype, torch.float32, counts),
                       OPTIONS["dampening-maximize"], steps=6, lr=lr, grad_scale=grad_scale,
                       skip=(0, 4), scalars_device=scalars_device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@mode_ids
def test_oracle_unaligned_views(counts, dtype):
    # Offset 1: every pointer misaligned, so the kernel takes its scalar path.
    for history_dtype in (dtype, torch.float32):
        call = cuda_call(ODD_SHAPES, dtype, history_dtype, counts, offset=1)
        run_against_oracle(call, OPTIONS["momentum-decay-nesterov"], steps=6)


@mode_ids
def test_oracle_more_tensors_than_one_table(counts):
    # 600 tensors: ten step launches of 60, two increment launches (480 counts each) in device
    # mode; one tensor of several chunks.
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 3000, (600,), generator=generator).tolist()
    sizes[::41] = [0] * len(sizes[::41])
    sizes[5] = 100_000
    call = cuda_call([(n,) for n in sizes], torch.float32, counts=counts)
    run_against_oracle(call, OPTIONS["momentum-decay-nesterov"], steps=4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@mode_ids
def test_oracle_different_counts_in_one_call(counts, dtype):
    # In host mode the call splits into launches by parity, first step and warm-up.
    check_different_counts(dtype, device=CUDA, counts_device=counts)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_host_and_device_modes_agree(dtype):
    options = dict(momentum=0.9, switch_step=3, nesterov=True, weight_decay=1e-2)
    shapes = [*ODD_SHAPES, (100_000,)]
    host = cuda_call(shapes, dtype, counts="cpu")
    device = cuda_call(shapes, dtype, counts=CUDA)
    run_schedule(host, options, CUDA, one_call=True)
    run_schedule(device, options, CUDA, one_call=True)
    lr = torch.tensor(0.02, device=CUDA)
    for call in (host, device):
        call.run(call.grads(), lr, grad_scale=torch.tensor(4.0, device=CUDA), **options)
    for h, d in zip(host.tensors(), device.tensors()):
        torch.testing.assert_close(h.cpu(), d.cpu(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@mode_ids
def test_first_step_ignores_a_nan_momentum_buffer(counts, dtype):
    for history_dtype in DTYPES:
        call = cuda_call(ODD_SHAPES, dtype, history_dtype, counts)
        grads = call.grads()
        call.run(grads, momentum=0.9, dampening=0.5)
        for p, b, g in zip(call.params, call.momentum_buffers, grads):
            assert torch.equal(b, g)
            assert p.isfinite().all()


def test_oracle_warmup_never_reads_the_history():
    call = cuda_call(ODD_SHAPES, torch.float32, history_fill=float("nan"))
    run_against_oracle(call, dict(switch_step=2), steps=5, history_from=2)


@pytest.mark.parametrize("inf_device", ["cpu", CUDA])
@mode_ids
def test_found_inf_changes_nothing(counts, inf_device):
    call = cuda_call(ODD_SHAPES, torch.float32, counts=counts)
    options = OPTIONS["momentum-decay-nesterov"]
    for k in range(3):
        before = call.snapshot()
        call.run(call.grads(), found_inf=torch.tensor([1.0], device=inf_device), **options)
        call.assert_unchanged(before, f"step {k}")
        call.run(call.grads(), found_inf=torch.zeros((), device=inf_device), **options)


def test_oracle_channels_last_param_and_contiguous_grad():
    generator = torch.Generator().manual_seed(0)
    param = randn((2, 3, 4, 5), generator).float().to(CUDA)
    call = Call([param.to(memory_format=torch.channels_last)], counts_device=CUDA)
    oracles = [OracleParam(param)]
    tolerance = Tolerance(torch.float32, torch.float32, 0.9)
    options = dict(momentum=0.9, weight_decay=1e-2)
    for k in range(4):
        grads = [randn((2, 3, 4, 5), generator).float().to(CUDA)]
        call.run(grads, **options)
        oracle_step(oracles[0], grads[0], lr=0.05, coefficients=PAPER_COEFFICIENTS, **options)
        check_against(call, oracles, tolerance, f"step {k}", options)


def test_counts_on_two_devices_raise_before_any_change():
    call = cuda_call([(5,), (3, 4)], torch.float32, counts=CUDA)
    call.steps[1] = call.steps[1].cpu()
    before = call.snapshot()
    with pytest.raises(RuntimeError, match=r"steps\[1\] is on cpu"):
        call.run(call.grads())
    call.assert_unchanged(before)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@mode_ids
def test_opcheck(counts, momentum):
    call = cuda_call([(5,), (3, 4)], torch.float32, counts=counts)
    for b in call.momentum_buffers:
        b.zero_()
    call.steps[1].fill_(3)
    args = (call.params, call.grads(), call.delta_even, call.delta_odd,
            call.momentum_buffers if momentum else [], call.steps, 0.1,
            torch.tensor(0.05, device=CUDA), B1, B2, momentum, 0.0, 1e-3, False, False, 2,
            torch.tensor(2.0, device=CUDA), torch.tensor(0.0, device=CUDA))
    torch.library.opcheck(OP, args)


def test_cuda_graph_capture_matches_eager():
    """Device mode reads the counts, lr, grad_scale and found_inf on the GPU: a captured step
    replays as the eager one."""
    options = OPTIONS["momentum-decay-nesterov"]
    eager = cuda_call(ODD_SHAPES, torch.float32)
    graphed = cuda_call(ODD_SHAPES, torch.float32)
    lr = torch.tensor(0.05, device=CUDA)
    scale = torch.tensor(2.0, device=CUDA)
    inf = torch.zeros((), device=CUDA)
    static_grads = [torch.zeros_like(p) for p in graphed.params]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, on a scratch call
        scratch = cuda_call(ODD_SHAPES, torch.float32)
        scratch.run(static_grads, lr, grad_scale=scale, found_inf=inf, **options)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.run(static_grads, lr, grad_scale=scale, found_inf=inf, **options)
    assert all(graphed.count(i) == 0 for i in range(len(ODD_SHAPES)))  # capture runs nothing
    for k in range(6):
        grads = eager.grads()
        inf.fill_(float(k == 2))
        eager.run(grads, lr, grad_scale=scale, found_inf=inf.clone(), **options)
        for static, g in zip(static_grads, grads):
            static.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    for g, e in zip(graphed.tensors(), eager.tensors()):
        torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)
    assert graphed.count(0) == 5


@mode_ids
def test_64_bit_indexing(counts):
    """A tensor of more than 2^31 elements (bf16, ~4.3 GB each for W, g and both slots)."""
    numel = (1 << 31) + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * (1 << 30):
        pytest.skip("needs about 20 GB of free GPU memory")
    w = torch.ones(numel, dtype=torch.bfloat16, device=CUDA)
    g = torch.full((numel,), 0.5, dtype=torch.bfloat16, device=CUDA)
    even, odd = torch.zeros_like(w), torch.zeros_like(w)
    step = torch.zeros((), dtype=torch.int64, device=counts)
    OP([w], [g], [even], [odd], [], [step], 0.5, None, B1, B2, 0.0, 0.0, 0.0, False, False, 0,
       None, None)
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
