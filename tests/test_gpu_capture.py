"""Whole training steps captured in a CUDA graph, for the GPU backends (cuda, triton) with
capturable=True: `zero_grad(set_to_none=True)` inside the graph gives the gradients new
addresses, so the Triton backend builds its pointer table during capture. Until the first replay
that table holds garbage; an eager step on the same tensors and the same stream before the first
replay must not use it (it once did: the table entered the layout cache at capture). Each run is
compared with the same steps of the `torch` backend, eager.

Skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from tmsgd_kernels import TMSGD
from tmsgd_kernels.implementations import unavailable_reason

CUDA = torch.device("cuda")
BACKENDS = [name for name in ("cuda", "triton")
            if torch.cuda.is_available() and unavailable_reason(name, CUDA) is None]
pytestmark = pytest.mark.skipif(not BACKENDS, reason="no GPU backend can run here")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(33, 65), torch.nn.Tanh(),
                               torch.nn.Linear(65, 3)).to(CUDA)


def _train_step(model, optimizer, x) -> None:
    optimizer.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    optimizer.step()


@pytest.mark.parametrize("backend", BACKENDS or ["none"])
def test_whole_step_capture_then_an_eager_step_before_the_first_replay(backend):
    options = dict(lr=0.05, momentum=0.9, switch_step=2)
    reference = _model()
    reference_opt = TMSGD(reference.parameters(), backend="torch", **options)
    model = _model()
    optimizer = TMSGD(model.parameters(), backend=backend, capturable=True, **options)
    inputs = [torch.randn(8, 33, device=CUDA) for _ in range(9)]
    static_x = torch.zeros(8, 33, device=CUDA)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on the capture stream, as torch's docs advise
        for x in inputs[:3]:
            _train_step(model, optimizer, x)
    torch.cuda.current_stream().wait_stream(stream)
    for x in inputs[:3]:
        _train_step(reference, reference_opt, x)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        _train_step(model, optimizer, static_x)

    # An eager step of the optimizer alone, on the capture stream, with the gradients the
    # capture allocated (same addresses as the captured table) filled with known values.
    known = [torch.randn_like(p) for p in model.parameters()]
    with torch.cuda.stream(stream):
        for p, g in zip(model.parameters(), known):
            p.grad.copy_(g)
        optimizer.step()
    torch.cuda.current_stream().wait_stream(stream)
    for p, g in zip(reference.parameters(), known):
        p.grad = g.clone()
    reference_opt.step()

    for x in inputs[3:]:
        static_x.copy_(x)
        graph.replay()
        _train_step(reference, reference_opt, x)
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert all(int(optimizer.state[p]["step"]) == 10 for p in model.parameters())


@pytest.mark.parametrize("backend", BACKENDS or ["none"])
def test_cpu_tensor_lr_is_read_on_the_host_and_captures(backend):
    """A CPU lr tensor (a scheduler's) is never copied to the GPU: every backend reads it on the
    host, which costs no synchronization, so a captured step records no pageable copy (which
    capture refuses). A graph replays the lr it was captured with, as for a float lr; a tensor
    lr that a graph should follow belongs on the GPU."""
    lr = torch.tensor(0.05)
    reference = _model()
    reference_opt = TMSGD(reference.parameters(), backend="torch", lr=0.05, momentum=0.9)
    model = _model()
    optimizer = TMSGD(model.parameters(), backend=backend, capturable=True, lr=lr, momentum=0.9)
    inputs = [torch.randn(8, 33, device=CUDA) for _ in range(6)]
    static_x = torch.zeros(8, 33, device=CUDA)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for x in inputs[:2]:
            _train_step(model, optimizer, x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        _train_step(model, optimizer, static_x)
    for x in inputs[2:]:
        static_x.copy_(x)
        graph.replay()
    for x in inputs:
        _train_step(reference, reference_opt, x)
    torch.cuda.synchronize()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
