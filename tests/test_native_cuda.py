"""The `cuda` backend (the multi-tensor CUDA kernel of csrc/) against the pure-PyTorch backend on
the GPU, step by step. Skipped where no GPU (or no CUDA build of the extension) exists; the oracle
suite also runs against `cuda` there through the `backend` fixture.

Written for GPU machines; on the machine this was written on (no GPU) it only skips.
"""

from __future__ import annotations

import pytest
import torch
from test_native_cpu import DTYPES, ODD_SIZES, OPTIONS, Bucket, history_dtypes, run_lockstep

from tmsgd_kernels.backends import native_cuda
from tmsgd_kernels.step_options import StepOptions

REASON = native_cuda.unavailable_reason(torch.device("cuda"))
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"cuda backend: {REASON}")
CUDA = "cuda"


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_with_torch_every_dtype_pair(dtype, options):
    for history_dtype in history_dtypes(dtype):
        run_lockstep(ODD_SIZES, dtype, history_dtype, options, backend=native_cuda, device=CUDA)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_unaligned_views(dtype):
    # Offset 1: every pointer misaligned, so the kernel takes its scalar path.
    run_lockstep(ODD_SIZES, dtype, torch.float32, OPTIONS["momentum-decay-nesterov"], offset=1,
                 backend=native_cuda, device=CUDA)


def test_parity_more_tensors_than_one_table():
    # 600 tensors: three launches of the step kernel (256 per table), one increment.
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 3000, (600,), generator=generator).tolist()
    sizes[::41] = [0] * len(sizes[::41])
    sizes[5] = 100_000  # several chunks in one tensor
    run_lockstep(sizes, torch.float32, torch.float32, OPTIONS["momentum-decay-nesterov"],
                 steps=5, backend=native_cuda, device=CUDA)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parity_grad_scale_tensor_lr_and_skipped_steps(dtype):
    run_lockstep(ODD_SIZES, dtype, torch.float32, OPTIONS["dampening-maximize"],
                 grad_scale=1024.0, lr=torch.tensor(0.03), skip=(0, 4), backend=native_cuda,
                 device=CUDA)


def test_cuda_graph_capture_matches_eager():
    """lr, step, grad_scale and found_inf are read on the device: a captured step replays."""
    options = dict(OPTIONS["momentum-decay-nesterov"], momentum=0.9)
    eager = Bucket(ODD_SIZES, torch.float32, torch.float32, 0.9, device=CUDA)
    graphed = eager.clone()
    lr = torch.tensor(0.05, device=CUDA)
    scale = torch.tensor(2.0, device=CUDA)
    inf = torch.tensor(0.0, device=CUDA)
    static_grads = [torch.zeros_like(p) for p in graphed.params]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, on a scratch copy
        scratch = graphed.clone()
        scratch.run(native_cuda, static_grads, lr, scale, inf, **options)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.run(native_cuda, static_grads, lr, scale, inf, **options)
    # Capture does not run the step: the state is still the initial one.
    assert int(graphed.step) == 0
    for k in range(6):
        grads = eager.grads()
        skipped = k == 2
        inf.fill_(float(skipped))
        eager.run(native_cuda, grads, lr, scale, inf.clone(), **options)
        for static, g in zip(static_grads, grads):
            static.copy_(g)
        graph.replay()
    torch.cuda.synchronize()
    for p, q in zip(graphed.params, eager.params):
        assert torch.equal(p, q)
    assert torch.equal(graphed.history, eager.history)
    assert torch.equal(graphed.momentum_buffer, eager.momentum_buffer)
    assert int(graphed.step) == int(eager.step) == 5


def test_64_bit_indexing():
    """A tensor of more than 2^31 elements (bf16, ~4.3 GB each for W, g and the history)."""
    numel = (1 << 31) + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * (1 << 30):
        pytest.skip("needs about 20 GB of free GPU memory")
    w = torch.ones(numel, dtype=torch.bfloat16, device=CUDA)
    g = torch.full((numel,), 0.5, dtype=torch.bfloat16, device=CUDA)
    history = torch.zeros(2, numel, dtype=torch.bfloat16, device=CUDA)
    step = torch.zeros((), dtype=torch.int64, device=CUDA)
    native_cuda.step_bucket([w], [g], history, None, step, StepOptions(lr=0.5, b1=0.5, b2=-0.5))
    # First step, zero history: d_new = -lr * g = -0.25 everywhere, W = 0.75 (exact in bf16).
    for piece in (w[:4099], w[(1 << 31) - 5 :], w[-4099:]):
        assert torch.all(piece == 0.75)
    assert torch.all(history[0, -4099:] == -0.25) and torch.all(history[1, -4099:] == 0)
    assert int(step) == 1
