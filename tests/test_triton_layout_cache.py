"""The Triton op's layout cache is keyed on everything its decisions depend on, and the op takes
the one-element tensors the C++ op takes.

- A cache hit skips the per-tensor checks and reuses a flat range or pointer table. It must not
  happen for tensors that sit at the addresses of a cached layout but differ from it otherwise:
  a gradient re-viewed in another order (the one-buffer all-reduce idiom with a transposed
  weight), a gradient of another dtype or shape. Each call is checked against the float64 oracle
  (tests/oracle.py), or must raise before anything changes.
- grad_scale, found_inf and lr_tensor may be on the CPU while the params are on a GPU: read on
  the host, their values reach the kernels as arguments (the CUDA op does the same). Without a
  GPU that path runs here as far as it can: the argument preparation for a CUDA device, and the
  kernels launched with the arguments so prepared, on CPU tensors under the interpreter. The
  test of the op itself with CUDA params runs only where there is a GPU.

Under TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU) the kernels run on CPU
tensors; the device path (counts read by the kernels) is then run through `op.run`.
"""

from __future__ import annotations

import os

import pytest
import torch
from oracle import OracleParam, Tolerance, assert_close, oracle_step

from tmsgd_kernels.coefficients import PAPER_COEFFICIENTS, delta_coefficients
from tmsgd_kernels.step_contract import StepScalars

triton = pytest.importorskip("triton")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton runs on CPU tensors only under TRITON_INTERPRET=1")

MODES = ["host", "device"]
LR = 0.05
B1, B2 = delta_coefficients(PAPER_COEFFICIENTS)


def _modules():
    from tmsgd_kernels.triton_kernels import kernel_scalars, layout, op, tensor_checks
    from tmsgd_kernels.triton_kernels.tensor_lists import TensorLists

    return kernel_scalars, layout, op, tensor_checks, TensorLists


class Run:
    """Params of one dtype stepped by the Triton op next to their float64 oracles."""

    def __init__(self, params: list[torch.Tensor], mode: str, momentum: float = 0.0,
                 lr: float | torch.Tensor = LR) -> None:
        self.params, self.mode, self.momentum, self.lr = params, mode, momentum, lr
        self.delta_even = [torch.zeros_like(p) for p in params]
        self.delta_odd = [torch.zeros_like(p) for p in params]
        self.buffers = [torch.zeros_like(p) for p in params] if momentum else []
        counts = torch.device("cpu") if mode == "host" else DEVICE
        self.steps = [torch.zeros((), dtype=torch.int64, device=counts) for _ in params]
        self.oracle = [OracleParam(p) for p in params]
        self.tolerance = Tolerance(params[0].dtype, params[0].dtype, momentum)

    def step(self, grads: list[torch.Tensor], grad_scale: torch.Tensor | None = None) -> None:
        _, _, op, _, TensorLists = _modules()
        lists = TensorLists(self.params, grads, self.delta_even, self.delta_odd, [], [],
                            self.buffers, [], self.steps)
        scalars = StepScalars.make(self.lr, B1, B2, self.momentum)
        if self.mode == "device" and DEVICE.type == "cpu":
            op.run(lists, scalars, grad_scale, None, counts_on_device=True)
        else:
            op.tmsgd_step_triton(*lists, *scalars.arguments(), grad_scale, None)
        scale = None if grad_scale is None else grad_scale.item()
        for oracle, grad in zip(self.oracle, grads):
            oracle_step(oracle, grad, lr=float(self.lr), momentum=self.momentum,
                        grad_scale=scale)
        self.check()

    def check(self) -> None:
        self.tolerance.observe(self.oracle)
        steps = max(o.step for o in self.oracle)
        for i, (p, o) in enumerate(zip(self.params, self.oracle)):
            assert int(self.steps[i]) == o.step
            assert_close(p, o.weight, self.tolerance.weight(steps), f"params[{i}] step {steps}")

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.delta_even, *self.delta_odd, *self.buffers, *self.steps]


def _values(shape, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(DEVICE)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_gradient_re_viewed_in_another_order_at_the_same_address(mode, momentum):
    """`w.grad = buf.view(8, 4).t()` after `buf.view(4, 8)`: same address and numel, other
    strides. The second layout must not be taken for the first (it was: error 0.50)."""
    run = Run([_values((4, 8), 0)], mode, momentum)
    buffer = torch.empty(32, device=DEVICE)
    for step in range(4):
        buffer.copy_(_values(32, 10 + step))
        grad = buffer.view(4, 8) if step % 2 == 0 else buffer.view(8, 4).t()
        run.step([grad])


@pytest.mark.parametrize("mode", MODES)
def test_flat_gradient_buffer_re_viewed_in_another_order(mode):
    """Params and state back to back in one buffer each (a flat layout, no table), grads views
    of one flat gradient buffer: first in the params' order, then a transposed view of the same
    memory for the second param."""
    storage = _values(8 + 24, 1)
    params = [storage[:8].view(2, 4), storage[8:].view(4, 6)]
    run = Run(params, mode, momentum=0.9)

    def flat_zeros() -> list[torch.Tensor]:
        return [t.view_as(p) for t, p in zip(torch.zeros(32, device=DEVICE).split([8, 24]),
                                             params)]

    run.delta_even, run.delta_odd, run.buffers = flat_zeros(), flat_zeros(), flat_zeros()
    flat = torch.empty(32, device=DEVICE)
    for step in range(4):
        flat.copy_(_values(32, 20 + step))
        second = flat[8:].view(4, 6) if step % 2 == 0 else flat[8:].view(6, 4).t()
        run.step([flat[:8].view(2, 4), second])


def _same_address_other_dtype(shape) -> tuple[torch.Tensor, torch.Tensor]:
    """An fp32 tensor and an fp16 tensor of one shape and strides at one address."""
    raw = torch.zeros(4 * torch.Size(shape).numel(), dtype=torch.uint8, device=DEVICE)
    return raw.view(torch.float32).view(shape), raw[:raw.numel() // 2].view(torch.float16).view(
        shape)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_of_another_dtype_at_the_same_address_is_refused(mode):
    run = Run([_values((16,), 2)], mode)
    fp32, fp16 = _same_address_other_dtype((16,))
    fp32.copy_(_values(16, 3))
    run.step([fp32])
    before = [t.clone() for t in run.tensors()]
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        run.step([fp16])
    assert all(torch.equal(a, b) for a, b in zip(run.tensors(), before)), "something changed"


@pytest.mark.parametrize("mode", MODES)
def test_gradient_of_another_shape_at_the_same_address_is_refused(mode):
    run = Run([_values((4, 8), 4)], mode)
    buffer = _values(32, 5)
    run.step([buffer.view(4, 8)])
    before = [t.clone() for t in run.tensors()]
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        run.step([buffer.view(8, 4)])
    assert all(torch.equal(a, b) for a, b in zip(run.tensors(), before)), "something changed"


@pytest.mark.parametrize("mode", MODES)
def test_unchanged_tensors_still_hit(mode):
    """The wider key still finds the layout of the same tensors: one build, then hits."""
    _, layout, _, _, _ = _modules()
    run = Run([_values((4, 8), 6), _values((3,), 7)], mode)
    grads = [torch.empty(4, 8, device=DEVICE), torch.empty(3, device=DEVICE)]
    before = layout.cache_stats()
    for step in range(3):
        for i, g in enumerate(grads):
            g.copy_(_values(g.shape, 30 + 2 * step + i))
        run.step(grads)
    after = layout.cache_stats()
    assert (after["builds"] - before["builds"], after["hits"] - before["hits"]) == (1, 2)


# ------------------------------------------------------- one-element tensors on the CPU (defect 11)


def _lists(device: torch.device, n: int = 3):
    *_, TensorLists = _modules()
    params = [torch.zeros(n, device=device)]
    return TensorLists(params, [torch.zeros(n, device=device)], [torch.zeros(n, device=device)],
                       [torch.zeros(n, device=device)], [], [], [], [],
                       [torch.zeros((), dtype=torch.int64)])


def test_checks_accept_cpu_scalar_tensors_with_params_on_another_device():
    """Params on the meta device stand for a GPU's: the call checks look only at devices."""
    *_, tensor_checks, _ = _modules()
    lists = _lists(torch.device("meta"))
    scalars = StepScalars.make(torch.tensor(0.1), B1, B2)
    tensor_checks.check_call(lists, scalars, torch.tensor(8.0), torch.tensor(0.0))


@pytest.mark.parametrize("what", ["lr_tensor", "grad_scale", "found_inf"])
def test_checks_refuse_scalar_tensors_on_a_third_device(what):
    *_, tensor_checks, _ = _modules()
    lists = _lists(torch.device("cpu"))
    elsewhere = torch.tensor(1.0, device="meta")
    scalars = StepScalars.make(elsewhere if what == "lr_tensor" else 0.1, B1, B2)
    with pytest.raises(ValueError, match=f"{what} is on meta"):
        tensor_checks.check_call(lists, scalars, elsewhere if what == "grad_scale" else None,
                                 elsewhere if what == "found_inf" else None)


@pytest.mark.parametrize("what", ["grad_scale", "found_inf"])
def test_checks_refuse_integer_grad_scale_and_found_inf(what):
    """As the C++ op does: they are floating-point (an integer lr_tensor is allowed)."""
    *_, tensor_checks, _ = _modules()
    lists = _lists(torch.device("cpu"))
    one = torch.tensor(1)
    with pytest.raises(ValueError, match=f"{what} must be a one-element floating-point"):
        tensor_checks.check_call(lists, StepScalars.make(one, B1, B2),
                                 one if what == "grad_scale" else None,
                                 one if what == "found_inf" else None)


def test_cpu_scalar_tensors_are_read_on_the_host_for_gpu_kernels():
    """For kernels on a GPU, CPU lr_tensor and grad_scale become values (no pointer, no copy);
    tensors on the kernels' device are passed as pointers."""
    kernel_scalars, *_ = _modules()
    param = torch.zeros(3)
    scalars = StepScalars.make(torch.tensor(0.25, dtype=torch.float64), B1, B2, momentum=0.5)
    for_gpu = kernel_scalars.kernel_scalars(scalars, torch.tensor(64.0), None, param,
                                            torch.device("cuda"))
    lr, lr_pointer, scale, scale_pointer = for_gpu.values[:4]
    assert (lr, scale) == (0.25, 64.0) and lr_pointer is param and scale_pointer is param
    flags = for_gpu.flags
    assert flags["HAS_GRAD_SCALE"]
    assert not flags["LR_ON_DEVICE"] and not flags["GRAD_SCALE_ON_DEVICE"]
    here = kernel_scalars.kernel_scalars(scalars, torch.tensor(64.0), None, param,
                                         torch.device("cpu"))
    assert here.values[1] is scalars.lr_tensor and here.values[2] == 1.0
    assert here.flags["LR_ON_DEVICE"] and here.flags["GRAD_SCALE_ON_DEVICE"]


def test_kernels_step_with_host_read_scalars():
    """The kernels with lr and grad_scale as values (what a GPU call with CPU tensors gets), run
    on CPU tensors: against the oracle."""
    kernel_scalars, layout, op, _, TensorLists = _modules()
    if DEVICE.type != "cpu":
        pytest.skip("the CUDA op itself is tested below")
    params = [_values((5, 7), 8), _values((3,), 9)]
    oracles = [OracleParam(p) for p in params]
    lists = TensorLists(params, [torch.empty_like(p) for p in params],
                        [torch.zeros_like(p) for p in params],
                        [torch.zeros_like(p) for p in params], [], [],
                        [torch.zeros_like(p) for p in params], [],
                        [torch.zeros((), dtype=torch.int64) for _ in params])
    scalars = StepScalars.make(torch.tensor(LR), B1, B2, momentum=0.9)
    args = kernel_scalars.kernel_scalars(scalars, torch.tensor(16.0), None, params[0],
                                         torch.device("cuda"))
    assert not args.flags["LR_ON_DEVICE"] and not args.flags["GRAD_SCALE_ON_DEVICE"]
    tolerance = Tolerance(torch.float32, torch.float32, 0.9)
    for step in range(3):
        for i, g in enumerate(lists.grads):
            g.copy_(_values(g.shape, 40 + 2 * step + i) * 16)
        found, stepped = layout.lookup(lists, counts_on_device=False)
        op.launch(found, stepped, step, args)
        for oracle, grad in zip(oracles, lists.grads):
            oracle_step(oracle, grad, lr=LR, momentum=0.9, grad_scale=16.0)
        tolerance.observe(oracles)
        for i, (p, o) in enumerate(zip(params, oracles)):
            assert_close(p, o.weight, tolerance.weight(step + 1), f"params[{i}] step {step}")


@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a GPU: CUDA params, CPU scalars")
@pytest.mark.parametrize("mode", MODES)
def test_op_takes_cpu_scalar_tensors_with_gpu_params(mode):
    run = Run([_values((5, 7), 11), _values((300,), 12)], mode, momentum=0.9,
              lr=torch.tensor(LR))
    for step in range(3):
        grads = [_values(p.shape, 50 + 2 * step + i) * 8 for i, p in enumerate(run.params)]
        run.step(grads, grad_scale=torch.tensor(8.0))
    before = [t.clone() for t in run.tensors()]
    _, _, op, _, _ = _modules()
    scalars = StepScalars.make(torch.tensor(LR), B1, B2, momentum=0.9)
    op.tmsgd_step_triton(run.params, [torch.ones_like(p) for p in run.params], run.delta_even,
                         run.delta_odd, [], [], run.buffers, [], run.steps, *scalars.arguments(),
                         torch.tensor(8.0), torch.tensor(float("inf")))
    assert all(torch.equal(a, b) for a, b in zip(run.tensors(), before)), "a skipped step wrote"
